#define _GNU_SOURCE
#include "CIdleShim.h"
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/socket.h>

int idle_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int idle_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int idle_epoll_add(int ep, int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int idle_epoll_wait(int ep, uint64_t *tags, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) tags[i] = evs[i].data.u64;
    return n;
}

size_t idle_heap_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}
