/* keyset: (kind, key) pairs added, found, updated, told apart, grown, iterated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "keyset.h"

static bool has(const struct keyset *s, const char *kind, const char *key)
{
    return keyset_get(s, kind, strlen(kind), key, strlen(key)) != NULL;
}

static uint64_t value(const struct keyset *s, const char *kind, const char *key)
{
    return keyset_get(s, kind, strlen(kind), key, strlen(key))->value;
}

static void added_pairs_are_found_and_others_are_not(void **state)
{
    struct keyset s = {0};
    assert_false(has(&s, "quote", "AAPL"));
    assert_non_null(keyset_put(&s, "quote", 5, "AAPL", 4, 7));
    assert_non_null(keyset_put(&s, "quote", 5, "AAPL", 4, 9)); /* again: updated */
    assert_int_equal(s.count, 1);
    assert_int_equal(value(&s, "quote", "AAPL"), 9);
    assert_true(has(&s, "quote", "AAPL"));
    assert_false(has(&s, "trade", "AAPL"));
    assert_false(has(&s, "quote", "AAP"));
    /* the split between kind and key matters */
    assert_non_null(keyset_put(&s, "ab", 2, "c", 1, 1));
    assert_false(has(&s, "a", "bc"));
    keyset_free(&s);
}

static void many_pairs_survive_growth(void **state)
{
    struct keyset s = {0};
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "SYM%d", i);
        assert_non_null(keyset_put(&s, i % 2 ? "quote" : "trade", 5, key, strlen(key), i));
    }
    assert_int_equal(s.count, 20000);
    size_t seen = 0;
    for (size_t i = 0; i < s.cap; i++)
        seen += keyset_slot(&s, i) != NULL;
    assert_int_equal(seen, 20000);
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "SYM%d", i);
        assert_true(has(&s, i % 2 ? "quote" : "trade", key));
        assert_int_equal(value(&s, i % 2 ? "quote" : "trade", key), i);
        assert_false(has(&s, i % 2 ? "trade" : "quote", key));
    }
    keyset_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(added_pairs_are_found_and_others_are_not),
        cmocka_unit_test(many_pairs_survive_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
