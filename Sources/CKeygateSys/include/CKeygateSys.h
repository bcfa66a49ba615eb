#ifndef KEYGATE_SYS_H
#define KEYGATE_SYS_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

// Thin wrappers for what Swift's Glibc module does not import: epoll (declared under
// sys/epoll.h, not part of the module) and accept4 (a GNU extension). struct epoll_event is
// packed on x86_64, so Swift reads it only through these accessors.

enum {
    KG_EPOLLIN = 0x001,
    KG_EPOLLOUT = 0x004,
    KG_EPOLLERR = 0x008,
    KG_EPOLLHUP = 0x010,
    KG_EPOLLRDHUP = 0x2000,
    KG_EPOLLEXCLUSIVE = 1u << 28,
};

int kg_epoll_create(void);
/// op: 1 add, 2 del, 3 mod (as EPOLL_CTL_*).
int kg_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t tag);
/// Waits up to timeout_ms; fills tags[i] and events[i] for each ready descriptor.
int kg_epoll_wait(int epfd, uint64_t *tags, uint32_t *events, int max, int timeout_ms);
/// A non-blocking eventfd, and a write of 1 to it (wakes whoever waits on it).
int kg_eventfd(void);
int kg_eventfd_signal(int fd);
/// A non-blocking CLOCK_MONOTONIC timerfd, and arming it to fire once `after_us` from now
/// (0: disarmed). Either clears an expiry not yet read.
int kg_timerfd(void);
int kg_timerfd_arm(int fd, long after_us);
int kg_accept4(int fd, struct sockaddr *addr, socklen_t *len);
/// The calling thread's scheduling policy: whether it is the default one (SCHED_OTHER), and
/// switching it between SCHED_OTHER and SCHED_BATCH (same nice value, no wake-up preemption).
int kg_thread_policy_is_default(void);
int kg_thread_set_batch(int on);

/// recv, send (MSG_NOSIGNAL) and sendmsg (MSG_NOSIGNAL) as plain system calls, without libc's
/// thread-cancellation bookkeeping; -1 and errno on failure, as the libc calls.
ssize_t kg_recv(int fd, void *buf, size_t len);
ssize_t kg_send(int fd, const void *buf, size_t len);
ssize_t kg_sendmsg(int fd, const struct msghdr *msg);
/// recv with MSG_PEEK: the bytes stay queued for the next read.
ssize_t kg_peek(int fd, void *buf, size_t len);

/// splice(2) between a socket and a pipe, non-blocking, pages moved rather than copied.
ssize_t kg_splice(int from, int to, size_t len);
/// A non-blocking pipe, grown towards `size` bytes; returns its capacity, or -1 and errno.
int kg_pipe(int fds[2], int size);

/// A non-blocking inotify descriptor watching `folder` for files written, moved in or removed.
int kg_watch_folder(const char *folder);
/// Names the calling thread (the first 15 bytes), as `top -H` and `ps -L` show it.
void kg_set_thread_name(const char *name);
/// Drains pending inotify events; returns how many bytes were read (0 when none).
int kg_drain_fd(int fd);

/// An anonymous in-memory file (memfd); -1 on failure.
int kg_memfd(const char *name);

/// Hands the heap's free pages back to the kernel (glibc's malloc_trim): start-up and reloads
/// free far more than the steady state ever uses again.
void kg_release_free_memory(void);

#endif
