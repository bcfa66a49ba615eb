#ifndef KEYGATE_TLS_H
#define KEYGATE_TLS_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stddef.h>

// OpenSSL's server side as keygate uses it, in C because most of it is macros, stacks and
// callbacks Swift cannot import: contexts with Mozilla's "intermediate" settings, SNI choice
// among several certificates, and sessions on memory BIOs so the event loops own the sockets.

/// A server context for one certificate chain and key (PEM files); NULL on failure, with the
/// reason in `err` (OpenSSL's error queue drained). min_tls13: refuse TLS 1.2.
SSL_CTX *kg_tls_server_ctx(const char *cert, const char *key, int min_tls13, char *err, size_t errlen);

/// Client certificates: mode 1 optional (a certificate that does not verify is ignored),
/// 2 required (the handshake fails without a valid one). 0 on failure, with the reason in err.
int kg_tls_client_ca(SSL_CTX *ctx, const char *ca, int mode, char *err, size_t errlen);
/// SHA-256 of the client's certificate when it verified against the CA; 1 when out was filled.
int kg_tls_peer_fingerprint(SSL *ssl, unsigned char out[32]);
/// SHA-256 of the first certificate in a PEM file; 1 when out was filled.
int kg_cert_file_fingerprint(const char *path, unsigned char out[32]);

/// A client context for TLS to the upstream: verify against `ca` (NULL = the system's store)
/// unless verify is 0. NULL on failure, with the reason in err.
SSL_CTX *kg_tls_client_ctx(const char *ca, int verify, char *err, size_t errlen);
/// A client session on memory BIOs, sending `server_name` as SNI and, when verifying,
/// checking the certificate is for that name (or IP address).
SSL *kg_tls_client_session(SSL_CTX *ctx, const char *server_name, int verify);
/// Why the peer's certificate did not verify, or NULL.
const char *kg_tls_verify_error(SSL *ssl);

/// SNI: `count` contexts, the first the default; the others are chosen by the names of their
/// certificates (SAN DNS entries, `*.example.com` wildcards). Installs the callback on every
/// context; `table` must outlive them (kg_tls_sni_free).
void *kg_tls_sni_new(SSL_CTX **ctxs, int count);
void kg_tls_sni_free(void *table);

/// notAfter of a context's certificate, Unix seconds (0 when unknown), and its first name.
long long kg_tls_not_after(SSL_CTX *ctx);
int kg_tls_first_name(SSL_CTX *ctx, char *out, size_t outlen);

/// A server session on memory BIOs: ciphertext goes in with kg_tls_feed, comes out with
/// kg_tls_take.
SSL *kg_tls_session(SSL_CTX *ctx);
int kg_tls_feed(SSL *ssl, const void *buf, int len);
size_t kg_tls_pending(SSL *ssl);
int kg_tls_take(SSL *ssl, void *buf, int len);
/// 1 handshake done, 0 wants more input, -1 failed.
int kg_tls_handshake(SSL *ssl);
/// >0 plaintext bytes, 0 wants more input, -1 closed or failed.
int kg_tls_read(SSL *ssl, void *buf, int len);
/// Whether another kg_tls_read could return data: decrypted bytes buffered, or ciphertext not
/// yet processed. When not, the read that would only say "want more" is skipped.
int kg_tls_has_input(SSL *ssl);
/// Bytes accepted (all of them on memory BIOs), -1 on failure.
int kg_tls_write(SSL *ssl, const void *buf, int len);
/// 12 or 13.
int kg_tls_version(SSL *ssl);
/// The last error on this thread, drained, as text.
void kg_tls_error(char *out, size_t outlen);

#endif
