// accept4 is a GNU extension: request it before any system header is included.
#define _GNU_SOURCE
#include "CEpoll.h"

#ifdef __linux__
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(CEPOLL_IN == EPOLLIN, "EPOLLIN");
_Static_assert(CEPOLL_OUT == EPOLLOUT, "EPOLLOUT");
_Static_assert(CEPOLL_ERR == EPOLLERR, "EPOLLERR");
_Static_assert(CEPOLL_HUP == EPOLLHUP, "EPOLLHUP");
_Static_assert(CEPOLL_RDHUP == EPOLLRDHUP, "EPOLLRDHUP");
_Static_assert(CEPOLL_CTL_ADD == EPOLL_CTL_ADD, "EPOLL_CTL_ADD");
_Static_assert(CEPOLL_CTL_DEL == EPOLL_CTL_DEL, "EPOLL_CTL_DEL");
_Static_assert(CEPOLL_CTL_MOD == EPOLL_CTL_MOD, "EPOLL_CTL_MOD");
_Static_assert(CEPOLL_TCP_NODELAY == TCP_NODELAY, "TCP_NODELAY");
_Static_assert(CEPOLL_IPPROTO_TCP == IPPROTO_TCP, "IPPROTO_TCP");

int cepoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int cepoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event;
    event.events = events;
    event.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &event);
}

int cepoll_wait(int epfd, cepoll_event *events, int maxevents, int timeout_ms) {
    struct epoll_event raw[256];
    if (maxevents > 256) maxevents = 256;
    int count = epoll_wait(epfd, raw, maxevents, timeout_ms);
    for (int i = 0; i < count; i++) {
        events[i].events = raw[i].events;
        events[i].data = raw[i].data.u64;
    }
    return count;
}

int cepoll_accept(int fd, struct sockaddr *address, socklen_t *length) {
    return accept4(fd, address, length, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int cepoll_eventfd(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

int cepoll_eventfd_signal(int fd) {
    uint64_t one = 1;
    for (;;) {
        ssize_t written = write(fd, &one, sizeof one);
        if (written == (ssize_t)sizeof one) return 0;
        // EAGAIN means the counter is saturated: the reader is already due to wake up.
        if (written < 0 && errno == EAGAIN) return 0;
        if (written < 0 && errno == EINTR) continue;
        return -1;
    }
}

void cepoll_eventfd_drain(int fd) {
    uint64_t value;
    while (read(fd, &value, sizeof value) < 0 && errno == EINTR) {
    }
}

int cepoll_socket(int domain) {
    return socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

long cepoll_send(int fd, const void *buffer, unsigned long length) {
    return (long)send(fd, buffer, length, MSG_NOSIGNAL);
}

unsigned long cepoll_heap_in_use(void) {
#ifdef __GLIBC__
    struct mallinfo2 info = mallinfo2();
    return (unsigned long)(info.uordblks + info.hblkhd);
#else
    return 0;
#endif
}

int cepoll_heap_trim(void) {
#ifdef __GLIBC__
    return malloc_trim(0);
#else
    return 0;
#endif
}

int cepoll_set_mmap_threshold(int bytes) {
#ifdef __GLIBC__
    return mallopt(M_MMAP_THRESHOLD, bytes);
#else
    (void)bytes;
    return 0;
#endif
}

void cepoll_set_thread_name(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof truncated - 1);
    truncated[sizeof truncated - 1] = '\0';
    pthread_setname_np(pthread_self(), truncated);
}
#endif
