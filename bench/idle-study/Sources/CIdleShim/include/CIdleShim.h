// What Swift's Glibc module does not offer: epoll (through helpers, epoll_event is a packed struct) and mallinfo2.
#pragma once
#include <stddef.h>
#include <stdint.h>

int idle_epoll_create(void);
/// Registers fd for EPOLLIN with tag as its epoll data.
int idle_epoll_add(int ep, int fd, uint64_t tag);
/// Waits; writes up to max tags of ready descriptors; returns their count or -1.
int idle_epoll_wait(int ep, uint64_t *tags, int max, int timeout_ms);
/// Bytes malloc has handed out and not taken back, every arena (mallinfo2: uordblks + hblkhd).
size_t idle_heap_in_use(void);
/// accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC).
int idle_accept(int fd);
