/*
 * mpsc: a lock-free inbox, many producers and one consumer.
 *
 * Intrusive: the caller embeds a struct mpsc_node in what it queues and
 * owns that memory throughout; the inbox allocates nothing. Producers push
 * onto a stack (any thread, lock-free); the one consumer takes the whole
 * stack at once and gets it oldest first. A node belongs to the inbox from
 * mpsc_push until mpsc_take_all returns it; the caller must not touch it
 * in between.
 *
 * Every access to `top` is sequentially consistent: a push publishes the
 * node's contents to the consumer that takes it, and the shard's doorbell
 * handshake (shard.c) orders a push against the consumer's check for an
 * empty inbox with fences of its own.
 */
#ifndef TICKFAN_MPSC_H
#define TICKFAN_MPSC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct mpsc_node {
    struct mpsc_node *next;
};

struct mpsc {
    _Atomic(struct mpsc_node *) top; /* the newest node pushed; NULL: empty */
};

/* The struct holding node `n` as its member `member`. */
#define mpsc_entry(n, type, member) ((type *)((char *)(n)-offsetof(type, member)))

static inline void mpsc_init(struct mpsc *q)
{
    atomic_init(&q->top, NULL);
}

/* Queues `n`. Any thread. Returns true if the inbox was empty before: the
 * consumer may have to be woken. */
static inline bool mpsc_push(struct mpsc *q, struct mpsc_node *n)
{
    struct mpsc_node *top = atomic_load_explicit(&q->top, memory_order_relaxed);
    do
        n->next = top;
    while (!atomic_compare_exchange_weak(&q->top, &top, n));
    return top == NULL;
}

/* Takes every node queued so far, oldest first, linked through `next`
 * (NULL: none). The consumer's thread only. */
static inline struct mpsc_node *mpsc_take_all(struct mpsc *q)
{
    struct mpsc_node *stack = atomic_exchange(&q->top, NULL);
    struct mpsc_node *fifo = NULL; /* the stack is newest first: reverse it */
    while (stack) {
        struct mpsc_node *next = stack->next;
        stack->next = fifo;
        fifo = stack;
        stack = next;
    }
    return fifo;
}

/* Is nothing queued? A moment's view unless the caller orders it. */
static inline bool mpsc_empty(struct mpsc *q)
{
    return atomic_load(&q->top) == NULL;
}

#endif
