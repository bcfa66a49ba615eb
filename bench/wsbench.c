/* WebSocket echo load for `make bench`: a small epoll echo server and a client that keeps N
 * connections each bouncing one message at a time, counting messages per second. C, so that
 * neither end is the bottleneck when measuring the proxy between them.
 *
 *   wsbench server PORT
 *   wsbench client PORT PATH CONNECTIONS SECONDS KEY PAYLOAD_BYTES
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 262144

struct conn {
    int fd;
    int upgraded;
    size_t len;
    unsigned char in[BUF];
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return;
        }
        c += w;
        n -= (size_t)w;
    }
}

/* Length of a frame header for a PLEN-byte payload, without the mask: 2, 4 or 10 bytes. */
static size_t header_len(size_t plen) { return plen < 126 ? 2 : plen < 65536 ? 4 : 10; }

/* Writes that header (first byte OP, MASK_BIT 0x80 or 0) at out; returns its length. */
static size_t frame_header(unsigned char *out, unsigned char op, size_t plen, unsigned char mask_bit) {
    out[0] = op;
    if (plen < 126) {
        out[1] = mask_bit | (unsigned char)plen;
    } else if (plen < 65536) {
        out[1] = mask_bit | 126;
        out[2] = (unsigned char)(plen >> 8);
        out[3] = (unsigned char)plen;
    } else {
        out[1] = mask_bit | 127;
        for (int k = 0; k < 8; k++) out[2 + k] = (unsigned char)((unsigned long long)plen >> (56 - 8 * k));
    }
    return header_len(plen);
}

/* Length of the first whole frame in p[0..n), or 0 when it is not whole yet. */
static size_t frame_len(const unsigned char *p, size_t n, size_t *hdr, size_t *plen, int *masked) {
    if (n < 2) return 0;
    size_t len = p[1] & 0x7f, h = 2;
    if (len == 126) {
        if (n < 4) return 0;
        len = (size_t)p[2] << 8 | p[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10) return 0;
        len = 0;
        for (int i = 2; i < 10; i++) len = len << 8 | p[i];
        h = 10;
    }
    *masked = p[1] & 0x80;
    if (*masked) h += 4;
    if (n < h + len) return 0;
    *hdr = h;
    *plen = len;
    return h + len;
}

static int server(int port) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) return perror("listen"), 1;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    static unsigned char out[BUF];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            ssize_t r = read(c->fd, c->in + c->len, BUF - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(c->fd);
                free(c);
                continue;
            }
            c->len += (size_t)r;
            size_t off = 0;
            if (!c->upgraded) {
                unsigned char *end = memmem(c->in, c->len, "\r\n\r\n", 4);
                if (!end) continue;
                /* A fixed accept value: the bench client does not check it. */
                const char *ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                write_all(c->fd, ok, strlen(ok));
                c->upgraded = 1;
                off = (size_t)(end + 4 - c->in);
            }
            size_t outn = 0;
            for (;;) {
                size_t h, plen;
                int masked;
                size_t fl = frame_len(c->in + off, c->len - off, &h, &plen, &masked);
                if (!fl) break;
                unsigned char *p = c->in + off;
                if (outn + header_len(plen) + plen > BUF) break;
                size_t oh = frame_header(out + outn, p[0], plen, 0);
                const unsigned char *mask = p + h - 4;
                for (size_t k = 0; k < plen; k++) out[outn + oh + k] = masked ? p[h + k] ^ mask[k & 3] : p[h + k];
                outn += oh + plen;
                off += fl;
            }
            if (outn) write_all(c->fd, out, outn);
            memmove(c->in, c->in + off, c->len - off);
            c->len -= off;
        }
    }
}

static int client(int port, const char *path, int conns, int seconds, const char *key, size_t payload) {
    int ep = epoll_create1(0), one = 1;
    /* A frame has a 2, 4 or 10 byte header (and a 4 byte mask on the way out); the server holds
     * a whole masked frame in one buffer. */
    size_t rh = header_len(payload);
    if (payload + rh + 4 > BUF) return fprintf(stderr, "payload too large: at most %d bytes\n", BUF - 14), 1;
    unsigned char *msg = malloc(payload + 14);
    size_t mh = frame_header(msg, 0x82, payload, 0x80) + 4;
    memset(msg + mh - 4, 0x5a, 4);
    memset(msg + mh, 'x' ^ 0x5a, payload);
    size_t reply = rh + payload;
    char req[1024];
    int reqn = snprintf(req, sizeof req,
                        "GET %s HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-api-key: %s\r\n\r\n",
                        path, key);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(fd, (struct sockaddr *)&a, sizeof a)) return perror("connect"), 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        write_all(fd, req, (size_t)reqn);
        cs[i].fd = fd;
        size_t n = 0;
        while (!memmem(cs[i].in, n, "\r\n\r\n", 4)) {
            ssize_t r = read(fd, cs[i].in + n, BUF - n);
            if (r <= 0) return fprintf(stderr, "handshake failed\n"), 1;
            n += (size_t)r;
        }
        if (strncmp((char *)cs[i].in, "HTTP/1.1 101", 12)) return fprintf(stderr, "no 101: %.40s\n", cs[i].in), 1;
        fcntl(fd, F_SETFL, O_NONBLOCK);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        write_all(fd, msg, mh + payload);
    }
    long messages = 0;
    double start = now(), end = start + seconds;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->in + c->len, BUF - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                return fprintf(stderr, "connection lost\n"), 1;
            }
            c->len += (size_t)r;
            while (c->len >= reply) {
                messages++;
                memmove(c->in, c->in + reply, c->len - reply);
                c->len -= reply;
                write_all(c->fd, msg, mh + payload);
            }
        }
    }
    printf("%ld messages in %.2f s\n", messages, now() - start);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "server")) return server(atoi(argv[2]));
    if (argc == 8 && !strcmp(argv[1], "client"))
        return client(atoi(argv[2]), argv[3], atoi(argv[4]), atoi(argv[5]), argv[6], (size_t)atoi(argv[7]));
    fprintf(stderr, "usage: wsbench server PORT | client PORT PATH CONNECTIONS SECONDS KEY PAYLOAD_BYTES\n");
    return 2;
}
