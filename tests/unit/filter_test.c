/* filter: kinds/keys matching and validation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "filter.h"

static bool match(const struct filter *f, const char *kind, const char *key)
{
    return filter_match(f, kind, strlen(kind), key, strlen(key));
}

static void empty_filter_matches_everything(void **state)
{
    struct filter f;
    const char *why;
    assert_int_equal(filter_init(&f, NULL, 0, NULL, 0, &why), 0);
    assert_true(match(&f, "quote", "AAPL"));
    assert_true(match(&f, "", ""));
    filter_free(&f);
}

static void kinds_filter_matches_only_its_kinds(void **state)
{
    char *kinds[] = {"trade", "auction"};
    struct filter f;
    const char *why;
    assert_int_equal(filter_init(&f, kinds, 2, NULL, 0, &why), 0);
    assert_true(match(&f, "trade", "AAPL"));
    assert_true(match(&f, "auction", "MSFT"));
    assert_false(match(&f, "quote", "AAPL"));
    assert_false(match(&f, "trad", "AAPL"));
    assert_false(match(&f, "trades", "AAPL"));
    filter_free(&f);
}

static void kinds_and_keys_must_both_match(void **state)
{
    char *kinds[] = {"quote"};
    char *keys[] = {"MSFT", "AAPL", "AAPL"};
    struct filter f;
    const char *why;
    assert_int_equal(filter_init(&f, kinds, 1, keys, 3, &why), 0);
    assert_true(match(&f, "quote", "AAPL"));
    assert_true(match(&f, "quote", "MSFT"));
    assert_false(match(&f, "trade", "AAPL"));
    assert_false(match(&f, "quote", "GOOG"));
    filter_free(&f);
}

static void many_keys_are_found_by_search(void **state)
{
    enum { N = 5000 };
    char **keys = calloc(N, sizeof(char *));
    for (int i = 0; i < N; i++) {
        keys[i] = malloc(16);
        snprintf(keys[i], 16, "SYM%d", i * 7);
    }
    struct filter f;
    const char *why;
    assert_int_equal(filter_init(&f, NULL, 0, keys, N, &why), 0);
    char buf[16];
    for (int i = 0; i < N * 7; i++) {
        snprintf(buf, sizeof(buf), "SYM%d", i);
        assert_int_equal(match(&f, "quote", buf), i % 7 == 0);
    }
    filter_free(&f);
    for (int i = 0; i < N; i++)
        free(keys[i]);
    free(keys);
}

static void empty_or_oversized_entries_are_rejected(void **state)
{
    struct filter f;
    const char *why = NULL;
    char *empty[] = {"quote", ""};
    assert_int_equal(filter_init(&f, empty, 2, NULL, 0, &why), -EINVAL);
    assert_non_null(why);
    char big[300];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    char *oversized[] = {big};
    assert_int_equal(filter_init(&f, NULL, 0, oversized, 1, &why), -EINVAL);
    char *many[65];
    for (int i = 0; i < 65; i++)
        many[i] = "k";
    assert_int_equal(filter_init(&f, many, 65, NULL, 0, &why), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_filter_matches_everything),
        cmocka_unit_test(kinds_filter_matches_only_its_kinds),
        cmocka_unit_test(kinds_and_keys_must_both_match),
        cmocka_unit_test(many_keys_are_found_by_search),
        cmocka_unit_test(empty_or_oversized_entries_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
