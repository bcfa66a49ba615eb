#ifndef KEYGATE_CYAML_SHIM_H
#define KEYGATE_CYAML_SHIM_H
#include <yaml.h>
#endif
