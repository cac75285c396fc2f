/* mpsc: the lock-free inbox gives back every node once, oldest first. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "mpsc.h"

struct item {
    struct mpsc_node node;
    int producer;
    uint32_t seq;
};

static void taking_from_an_empty_inbox_gives_nothing(void **state)
{
    struct mpsc q;
    mpsc_init(&q);
    assert_true(mpsc_empty(&q));
    assert_null(mpsc_take_all(&q));
    assert_true(mpsc_empty(&q));
}

static void nodes_come_back_oldest_first(void **state)
{
    struct mpsc q;
    mpsc_init(&q);
    struct item items[10];
    for (uint32_t i = 0; i < 10; i++) {
        items[i].seq = i;
        mpsc_push(&q, &items[i].node);
    }
    assert_false(mpsc_empty(&q));
    uint32_t want = 0;
    for (struct mpsc_node *n = mpsc_take_all(&q); n; n = n->next) {
        struct item *it = mpsc_entry(n, struct item, node);
        assert_ptr_equal(it, &items[want]);
        assert_int_equal(it->seq, want);
        want++;
    }
    assert_int_equal(want, 10);
    assert_true(mpsc_empty(&q));
    assert_null(mpsc_take_all(&q));
}

static void push_says_whether_the_inbox_was_empty(void **state)
{
    struct mpsc q;
    mpsc_init(&q);
    struct item a, b, c;
    assert_true(mpsc_push(&q, &a.node));
    assert_false(mpsc_push(&q, &b.node));
    struct mpsc_node *n = mpsc_take_all(&q);
    assert_ptr_equal(n, &a.node);
    assert_ptr_equal(n->next, &b.node);
    assert_null(n->next->next);
    assert_true(mpsc_push(&q, &c.node)); /* empty again once taken */
    assert_ptr_equal(mpsc_take_all(&q), &c.node);
}

#define PRODUCERS 2
#define PER_PRODUCER 100000

struct producer {
    struct mpsc *q;
    struct item *items;
};

static void *produce(void *p)
{
    struct producer *pr = p;
    for (uint32_t i = 0; i < PER_PRODUCER; i++)
        mpsc_push(pr->q, &pr->items[i].node);
    return NULL;
}

static void concurrent_producers_deliver_each_node_once_in_their_order(void **state)
{
    struct mpsc q;
    mpsc_init(&q);
    struct producer prs[PRODUCERS];
    pthread_t threads[PRODUCERS];
    uint8_t *seen[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        prs[p].q = &q;
        prs[p].items = calloc(PER_PRODUCER, sizeof(struct item));
        seen[p] = calloc(PER_PRODUCER, 1);
        assert_non_null(prs[p].items);
        assert_non_null(seen[p]);
        for (uint32_t i = 0; i < PER_PRODUCER; i++)
            prs[p].items[i] = (struct item){.producer = p, .seq = i};
    }
    for (int p = 0; p < PRODUCERS; p++)
        assert_int_equal(pthread_create(&threads[p], NULL, produce, &prs[p]), 0);

    /* the consumer takes while the producers push */
    int64_t next[PRODUCERS] = {0};
    size_t total = 0;
    while (total < (size_t)PRODUCERS * PER_PRODUCER) {
        struct mpsc_node *n = mpsc_take_all(&q);
        for (; n; n = n->next) {
            struct item *it = mpsc_entry(n, struct item, node);
            assert_in_range(it->producer, 0, PRODUCERS - 1);
            assert_in_range(it->seq, 0, PER_PRODUCER - 1);
            assert_int_equal(seen[it->producer][it->seq], 0); /* exactly once */
            seen[it->producer][it->seq] = 1;
            assert_int_equal(it->seq, next[it->producer]); /* in the producer's order */
            next[it->producer]++;
            total++;
        }
    }
    for (int p = 0; p < PRODUCERS; p++)
        assert_int_equal(pthread_join(threads[p], NULL), 0);
    assert_null(mpsc_take_all(&q));
    for (int p = 0; p < PRODUCERS; p++) {
        assert_int_equal(next[p], PER_PRODUCER);
        free(prs[p].items);
        free(seen[p]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(taking_from_an_empty_inbox_gives_nothing),
        cmocka_unit_test(nodes_come_back_oldest_first),
        cmocka_unit_test(push_says_whether_the_inbox_was_empty),
        cmocka_unit_test(concurrent_producers_deliver_each_node_once_in_their_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
