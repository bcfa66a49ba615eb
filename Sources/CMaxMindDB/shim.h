#ifndef KEYGATE_CMAXMINDDB_SHIM_H
#define KEYGATE_CMAXMINDDB_SHIM_H
// Debian keeps maxminddb.h in a multiarch include folder that pkg-config names, so no path here.
#include <maxminddb.h>
#endif
