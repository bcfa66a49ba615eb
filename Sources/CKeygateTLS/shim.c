#include "CKeygateTLS.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void kg_tls_error(char *out, size_t outlen) {
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0) last = e;
    if (outlen == 0) return;
    if (last == 0) {
        snprintf(out, outlen, "unknown TLS error");
    } else {
        ERR_error_string_n(last, out, outlen);
    }
}

// Mozilla's "intermediate" TLS 1.2 suites (TLS 1.3's defaults are already right).
static const char *kIntermediate =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char *selected = NULL;
    // Only HTTP/1.1 is spoken: a client offering only h2 gets no ALPN answer and may go on.
    if (SSL_select_next_proto(&selected, outlen, http11, sizeof http11, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *kg_tls_server_ctx(const char *cert, const char *key, int min_tls13, char *err, size_t errlen) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        kg_tls_error(err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, min_tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"keygate", 7);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (!SSL_CTX_set_cipher_list(ctx, kIntermediate) || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        kg_tls_error(err, errlen);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

struct sni_table {
    int count;
    SSL_CTX **ctxs;
};

static int name_matches(const char *pattern, const char *host) {
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *dot = strchr(host, '.');
        // A wildcard stands for exactly one label.
        return dot && dot != host && strcasecmp(pattern + 1, dot) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static int ctx_has_name(SSL_CTX *ctx, const char *host) {
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x) return 0;
    int found = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (names) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names) && !found; i++) {
            GENERAL_NAME *n = sk_GENERAL_NAME_value(names, i);
            if (n->type != GEN_DNS) continue;
            const char *dns = (const char *)ASN1_STRING_get0_data(n->d.dNSName);
            if (dns && (size_t)ASN1_STRING_length(n->d.dNSName) == strlen(dns)) found = name_matches(dns, host);
        }
        GENERAL_NAMES_free(names);
        return found;
    }
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0) found = name_matches(cn, host);
    return found;
}

static int sni_select(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    struct sni_table *t = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!host) return SSL_TLSEXT_ERR_OK;
    for (int i = 1; i < t->count; i++) {
        if (ctx_has_name(t->ctxs[i], host)) {
            SSL_set_SSL_CTX(ssl, t->ctxs[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;  // the default certificate
}

void *kg_tls_sni_new(SSL_CTX **ctxs, int count) {
    struct sni_table *t = calloc(1, sizeof *t);
    t->count = count;
    t->ctxs = calloc((size_t)count, sizeof(SSL_CTX *));
    for (int i = 0; i < count; i++) {
        t->ctxs[i] = ctxs[i];
        SSL_CTX_set_tlsext_servername_callback(ctxs[i], sni_select);
        SSL_CTX_set_tlsext_servername_arg(ctxs[i], t);
    }
    return t;
}

void kg_tls_sni_free(void *table) {
    struct sni_table *t = table;
    if (!t) return;
    free(t->ctxs);
    free(t);
}

long long kg_tls_not_after(SSL_CTX *ctx) {
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x) return 0;
    struct tm tm;
    if (!ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm)) return 0;
    return (long long)timegm(&tm);
}

int kg_tls_first_name(SSL_CTX *ctx, char *out, size_t outlen) {
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x || outlen == 0) return 0;
    out[0] = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (names) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
            GENERAL_NAME *n = sk_GENERAL_NAME_value(names, i);
            if (n->type != GEN_DNS) continue;
            snprintf(out, outlen, "%s", (const char *)ASN1_STRING_get0_data(n->d.dNSName));
            break;
        }
        GENERAL_NAMES_free(names);
    }
    if (!out[0]) X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)outlen);
    return (int)strlen(out);
}

// A session on a pair of memory BIOs: the event loop moves the bytes between them and the socket.
static SSL *session_on_memory(SSL_CTX *ctx) {
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (!rbio || !wbio) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(ssl);
        return NULL;
    }
    // An empty memory BIO means "wait for the socket", not end of file.
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    return ssl;
}

SSL *kg_tls_session(SSL_CTX *ctx) {
    SSL *ssl = session_on_memory(ctx);
    if (ssl) SSL_set_accept_state(ssl);
    return ssl;
}

int kg_tls_feed(SSL *ssl, const void *buf, int len) { return BIO_write(SSL_get_rbio(ssl), buf, len); }

size_t kg_tls_pending(SSL *ssl) { return BIO_ctrl_pending(SSL_get_wbio(ssl)); }

int kg_tls_take(SSL *ssl, void *buf, int len) { return BIO_read(SSL_get_wbio(ssl), buf, len); }

int kg_tls_handshake(SSL *ssl) {
    int r = SSL_do_handshake(ssl);
    if (r == 1) return 1;
    int e = SSL_get_error(ssl, r);
    return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
}

int kg_tls_read(SSL *ssl, void *buf, int len) {
    int r = SSL_read(ssl, buf, len);
    if (r > 0) return r;
    int e = SSL_get_error(ssl, r);
    return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
}

int kg_tls_has_input(SSL *ssl) { return SSL_pending(ssl) > 0 || BIO_ctrl_pending(SSL_get_rbio(ssl)) > 0; }

int kg_tls_write(SSL *ssl, const void *buf, int len) {
    int r = SSL_write(ssl, buf, len);
    return r > 0 ? r : -1;
}

int kg_tls_version(SSL *ssl) { return SSL_version(ssl) == TLS1_3_VERSION ? 13 : 12; }

static int accept_any(int preverify, X509_STORE_CTX *store) {
    (void)preverify;
    (void)store;
    // Optional mode: the handshake goes on; whether the certificate verified is read later.
    return 1;
}

int kg_tls_client_ca(SSL_CTX *ctx, const char *ca, int mode, char *err, size_t errlen) {
    ERR_clear_error();
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (!names || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
        kg_tls_error(err, errlen);
        return 0;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    if (mode == 2) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any);
    }
    SSL_CTX_set_verify_depth(ctx, 8);
    return 1;
}

int kg_tls_peer_fingerprint(SSL *ssl, unsigned char out[32]) {
    X509 *x = SSL_get1_peer_certificate(ssl);
    if (!x) return 0;
    int ok = SSL_get_verify_result(ssl) == X509_V_OK;
    unsigned int n = 0;
    if (ok) ok = X509_digest(x, EVP_sha256(), out, &n) == 1 && n == 32;
    X509_free(x);
    return ok;
}

int kg_cert_file_fingerprint(const char *path, unsigned char out[32]) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) return 0;
    unsigned int n = 0;
    int ok = X509_digest(x, EVP_sha256(), out, &n) == 1 && n == 32;
    X509_free(x);
    return ok;
}

SSL_CTX *kg_tls_client_ctx(const char *ca, int verify, char *err, size_t errlen) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        kg_tls_error(err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx, http11, sizeof http11);
    if (verify) {
        int ok = ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            kg_tls_error(err, errlen);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

SSL *kg_tls_client_session(SSL_CTX *ctx, const char *server_name, int verify) {
    SSL *ssl = session_on_memory(ctx);
    if (!ssl) return NULL;
    if (server_name && server_name[0]) {
        unsigned char ip[16];
        int is_ip = inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
        // SNI carries names only; an address is checked against the certificate's IP entries.
        if (!is_ip) SSL_set_tlsext_host_name(ssl, server_name);
        if (verify) {
            if (is_ip) {
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name);
            } else {
                SSL_set1_host(ssl, server_name);
            }
        }
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

const char *kg_tls_verify_error(SSL *ssl) {
    long r = SSL_get_verify_result(ssl);
    return r == X509_V_OK ? NULL : X509_verify_cert_error_string(r);
}
