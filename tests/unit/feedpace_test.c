/* feedpace: absolute deadlines of a steady schedule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "feedpace.h"
#include "clock.h"

static void deadlines_are_absolute_and_do_not_drift(void **state)
{
    assert_int_equal(feedpace_due_ns(100, 3, 0), 100);
    assert_int_equal(feedpace_due_ns(100, 3, 1), 100 + 333333333);
    assert_int_equal(feedpace_due_ns(100, 3, 2), 100 + 666666666);
    assert_int_equal(feedpace_due_ns(100, 3, 3), 100 + 1000000000);
    /* a million a second for 100 days: no overflow, no rounding drift */
    uint64_t i = 1000000ull * 86400 * 100;
    assert_int_equal(feedpace_due_ns(0, 1000000, i), (int64_t)i * 1000);
    assert_int_equal(feedpace_due_ns(0, 7, 7000000001ull), 1000000000142857142LL);
}

static void rate_zero_is_due_at_once(void **state)
{
    assert_int_equal(feedpace_due_ns(55, 0, 0), 55);
    assert_int_equal(feedpace_due_ns(55, 0, 123456789), 55);
}

static void sleeping_until_a_deadline_reaches_it(void **state)
{
    int64_t due = clock_mono_ns() + 20 * 1000000;
    assert_int_equal(feedpace_sleep_until(due), 0);
    assert_true(clock_mono_ns() >= due);
    assert_int_equal(feedpace_sleep_until(due - 1000000000), 0); /* in the past: at once */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deadlines_are_absolute_and_do_not_drift),
        cmocka_unit_test(rate_zero_is_due_at_once),
        cmocka_unit_test(sleeping_until_a_deadline_reaches_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
