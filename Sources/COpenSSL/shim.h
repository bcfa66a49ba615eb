#ifndef KEYGATE_COPENSSL_SHIM_H
#define KEYGATE_COPENSSL_SHIM_H
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

// SHA-256 of a short buffer through the low-level functions. OpenSSL 3's one-shot SHA256()
// looks the algorithm up in its provider tables on every call (a lock and a hash lookup, about
// half the cost of hashing an API key); these do not.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static inline void kg_sha256(const void *data, size_t len, unsigned char out[32]) {
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, data, len);
    SHA256_Final(out, &c);
}
#pragma GCC diagnostic pop
#endif
