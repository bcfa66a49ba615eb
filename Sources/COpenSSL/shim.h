#ifndef KEYGATE_COPENSSL_SHIM_H
#define KEYGATE_COPENSSL_SHIM_H
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#endif
