#ifndef CEPOLL_H
#define CEPOLL_H

// A tiny shim over the Linux calls Swift's Glibc module does not export (epoll, accept4, eventfd) and
// the constants it imports awkwardly. `struct epoll_event` is packed on x86-64, so events cross the
// boundary as the unpacked `cepoll_event` instead.

#include <stdint.h>
#include <sys/socket.h>

#ifdef __linux__

typedef struct cepoll_event {
    uint32_t events;
    uint64_t data;
} cepoll_event;

static const uint32_t CEPOLL_IN = 0x001;
static const uint32_t CEPOLL_OUT = 0x004;
static const uint32_t CEPOLL_ERR = 0x008;
static const uint32_t CEPOLL_HUP = 0x010;
static const uint32_t CEPOLL_RDHUP = 0x2000;

static const int CEPOLL_CTL_ADD = 1;
static const int CEPOLL_CTL_DEL = 2;
static const int CEPOLL_CTL_MOD = 3;

/// Creates a close-on-exec epoll instance.
int cepoll_create(void);
/// epoll_ctl with the event mask and 64-bit user data spelled out.
int cepoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// epoll_wait into unpacked events; at most 256 per call.
int cepoll_wait(int epfd, cepoll_event *events, int maxevents, int timeout_ms);

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC.
int cepoll_accept(int fd, struct sockaddr *address, socklen_t *length);
/// A non-blocking, close-on-exec eventfd with counter 0.
int cepoll_eventfd(void);
/// Adds 1 to an eventfd counter. Returns 0 or -1 with errno.
int cepoll_eventfd_signal(int fd);
/// Resets an eventfd counter to 0 (non-blocking).
void cepoll_eventfd_drain(int fd);

/// A non-blocking, close-on-exec stream socket.
int cepoll_socket(int domain);
/// send(2) with MSG_NOSIGNAL: a peer that went away is EPIPE, never SIGPIPE.
long cepoll_send(int fd, const void *buffer, unsigned long length);

/// Names the calling thread (truncated to 15 bytes), for top and debuggers.
void cepoll_set_thread_name(const char *name);

/// glibc's allocator (malloc.h, which Glibc does not export either): heap bytes in use (mallinfo2's
/// uordblks + hblkhd; 0 without glibc).
unsigned long cepoll_heap_in_use(void);
/// malloc_trim(0): gives freed heap pages back to the kernel. Returns 1 when some were released.
int cepoll_heap_trim(void);
/// mallopt(M_MMAP_THRESHOLD, bytes): blocks of this size or more are mmapped (and unmapped when freed);
/// setting it also stops glibc from raising it. Returns 1 on success.
int cepoll_set_mmap_threshold(int bytes);

static const int CEPOLL_TCP_NODELAY = 1;
static const int CEPOLL_IPPROTO_TCP = 6;

#endif
#endif
