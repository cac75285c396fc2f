/* topics: the append-only registry: lookups by name, creation on first use
 * with auto-create, the topic limit, and readers running while topics are
 * added from other threads. In-memory logs (no data directory). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "topics.h"

static const struct topics_options mem = {.data_dir = NULL, .log_size = 64 * 1024};

static void declared_topics_are_found_by_name_only(void **state)
{
    (void)state;
    static struct topics t;
    topics_init(&t);
    char err[256];
    assert_int_equal(topics_add(&t, "md", &mem, err, sizeof(err)), 0);
    assert_int_equal(topics_add(&t, "md.l2", &mem, err, sizeof(err)), 0);
    assert_int_equal(topics_add(&t, "md", &mem, err, sizeof(err)), 0); /* no-op */
    assert_int_equal(topics_count(&t), 2);
    struct topic *md = topics_find(&t, "md", 2);
    assert_non_null(md);
    assert_string_equal(md->name, "md");
    assert_int_equal(md->index, 0);
    assert_ptr_equal(topics_find(&t, "md.l2", 5), t.items[1]);
    assert_null(topics_find(&t, "m", 1));
    assert_null(topics_find(&t, "md.l", 4));
    assert_int_equal(topics_add(&t, "bad name", &mem, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "'bad name'"));

    /* auto-create off: a missing topic is -ENOENT and nothing is created */
    int why;
    assert_null(topics_find_or_create(&t, "new", 3, &why));
    assert_int_equal(why, -ENOENT);
    assert_int_equal(topics_count(&t), 2);
    topics_destroy(&t);
}

static void auto_create_adds_on_first_use_up_to_the_limit(void **state)
{
    (void)state;
    static struct topics t;
    topics_init(&t);
    assert_int_equal(topics_auto_create_enable(&t, &mem), 0);
    int why;
    struct topic *a = topics_find_or_create(&t, "fx.eur", 6, &why);
    assert_non_null(a);
    assert_int_equal(why, 0);
    assert_true(a->auto_created);
    assert_ptr_equal(topics_find_or_create(&t, "fx.eur", 6, &why), a); /* once */
    assert_int_equal(atomic_load(&t.auto_created), 1);
    assert_null(topics_find_or_create(&t, "a/b", 3, &why));
    assert_int_equal(why, -EINVAL);

    char name[32];
    for (int i = 1; i < TOPICS_MAX; i++) {
        int n = snprintf(name, sizeof(name), "t%d", i);
        assert_non_null(topics_find_or_create(&t, name, (size_t)n, &why));
    }
    assert_int_equal(topics_count(&t), TOPICS_MAX);
    assert_null(topics_find_or_create(&t, "one.more", 8, &why));
    assert_int_equal(why, -ENOSPC);
    assert_non_null(strstr(topics_strerror(why), TOPICS_MAX_TEXT));
    assert_int_equal(atomic_load(&t.refused), 2);
    /* every one is still found, at its index */
    for (int i = 1; i < TOPICS_MAX; i++) {
        int n = snprintf(name, sizeof(name), "t%d", i);
        struct topic *tp = topics_find(&t, name, (size_t)n);
        assert_non_null(tp);
        assert_int_equal(tp->index, (size_t)i);
    }
    topics_destroy(&t);
}

struct reader {
    struct topics *t;
    atomic_bool *stop;
    atomic_uint_fast64_t passes; /* whole walks done */
    uint64_t seen;               /* topics read */
};

/* What a shard does: walk [0, count) and read each topic's log, until told
 * to stop, then once more over the final set. */
static void *read_all(void *p)
{
    struct reader *r = p;
    bool last;
    do {
        last = atomic_load(r->stop);
        for (size_t i = 0, n = topics_count(r->t); i < n; i++) {
            struct topic *tp = r->t->items[i];
            assert_true(tp && tp->log && tp->index == i);
            r->seen += ringlog_head_seq(tp->log) == 0;
            assert_ptr_equal(topics_find(r->t, tp->name, tp->name_len), tp);
        }
        atomic_fetch_add(&r->passes, 1);
    } while (!last);
    return NULL;
}

static void *create_many(void *p)
{
    struct topics *t = p;
    char name[32];
    int why;
    for (int i = 0; i < 200; i++) {
        int n = snprintf(name, sizeof(name), "c%d", i);
        assert_non_null(topics_find_or_create(t, name, (size_t)n, &why));
    }
    return NULL;
}

static void readers_see_only_whole_topics_while_two_threads_add(void **state)
{
    (void)state;
    static struct topics t;
    topics_init(&t);
    assert_int_equal(topics_auto_create_enable(&t, &mem), 0);
    atomic_bool stop = false;
    struct reader r = {.t = &t, .stop = &stop};
    pthread_t rd, w1, w2;
    assert_int_equal(pthread_create(&rd, NULL, read_all, &r), 0);
    /* the reader is walking before the writers start, however loaded the
     * machine (else it might first run after they are done) */
    while (atomic_load(&r.passes) == 0)
        sched_yield();
    assert_int_equal(pthread_create(&w1, NULL, create_many, &t), 0);
    assert_int_equal(pthread_create(&w2, NULL, create_many, &t), 0);
    pthread_join(w1, NULL);
    pthread_join(w2, NULL);
    atomic_store(&stop, true);
    pthread_join(rd, NULL);
    /* both threads named the same 200 topics: each created once */
    assert_int_equal(topics_count(&t), 200);
    assert_int_equal(atomic_load(&t.auto_created), 200);
    assert_true(r.seen >= 200); /* at least the final walk */
    topics_destroy(&t);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(declared_topics_are_found_by_name_only),
        cmocka_unit_test(auto_create_adds_on_first_use_up_to_the_limit),
        cmocka_unit_test(readers_see_only_whole_topics_while_two_threads_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
