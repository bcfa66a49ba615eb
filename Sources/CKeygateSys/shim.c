#define _GNU_SOURCE
#include "CKeygateSys.h"
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <malloc.h>
#include <sys/socket.h>
#include <errno.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <sys/mman.h>
#include <pthread.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sched.h>

int kg_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int kg_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t tag) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = tag;
    return epoll_ctl(epfd, op, fd, &ev);
}

// Hands the ready events to Swift as two plain arrays (tags and event bits).
static int split_events(const struct epoll_event *evs, int n, uint64_t *tags, uint32_t *events) {
    for (int i = 0; i < n; i++) {
        tags[i] = evs[i].data.u64;
        events[i] = evs[i].events;
    }
    return n;
}

int kg_epoll_wait(int epfd, uint64_t *tags, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n;
    do {
        n = epoll_wait(epfd, evs, max, timeout_ms);
    } while (n < 0 && errno == EINTR);
    return split_events(evs, n, tags, events);
}

int kg_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int kg_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == sizeof one ? 0 : -1;
}

int kg_thread_policy_is_default(void) { return sched_getscheduler(0) == SCHED_OTHER; }

int kg_thread_set_batch(int on) {
    struct sched_param none = { 0 };
    return sched_setscheduler(0, on ? SCHED_BATCH : SCHED_OTHER, &none);
}

int kg_timerfd(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); }

int kg_timerfd_arm(int fd, long after_us) {
    struct itimerspec t = { { 0, 0 }, { after_us / 1000000, (after_us % 1000000) * 1000 } };
    return timerfd_settime(fd, 0, &t, NULL);
}

// Socket reads and writes through syscall(), not recv/send: libc brackets those with thread
// cancellation bookkeeping (two atomic updates per call in a multi-threaded process), and
// keygate never cancels a thread.
ssize_t kg_recv(int fd, void *buf, size_t len) {
    return syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

ssize_t kg_send(int fd, const void *buf, size_t len) {
    return syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, NULL, 0);
}

ssize_t kg_sendmsg(int fd, const struct msghdr *msg) {
    return syscall(SYS_sendmsg, fd, msg, MSG_NOSIGNAL);
}

int kg_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int kg_watch_folder(const char *folder) {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return -1;
    if (inotify_add_watch(fd, folder, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int kg_drain_fd(int fd) {
    char buf[4096];
    int total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        total += (int)n;
    }
    return total;
}

int kg_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

void kg_release_free_memory(void) { malloc_trim(0); }

void kg_set_thread_name(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof short_name - 1);
    short_name[sizeof short_name - 1] = 0;
    pthread_setname_np(pthread_self(), short_name);
}

ssize_t kg_peek(int fd, void *buf, size_t len) {
    return syscall(SYS_recvfrom, fd, buf, len, MSG_PEEK, NULL, NULL);
}

ssize_t kg_splice(int from, int to, size_t len) {
    return splice(from, NULL, to, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
}

int kg_pipe(int fds[2], int size) {
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
    // Growing may be refused (the per-user pipe limit): the default size still works.
    fcntl(fds[0], F_SETPIPE_SZ, size);
    int capacity = fcntl(fds[0], F_GETPIPE_SZ);
    return capacity > 0 ? capacity : 65536;
}
