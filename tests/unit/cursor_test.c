/* cursor: text form round trip and rejection of malformed cursors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cursor.h"

static void format_then_parse_gives_the_same_cursor(void **state)
{
    struct cursor cases[] = {
        {0, 0}, {1, 1}, {0xdeadbeefcafef00dull, 123456789}, {UINT64_MAX, UINT64_MAX}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[CURSOR_TEXT_MAX];
        size_t n = cursor_format(cases[i], buf);
        assert_int_equal(n, strlen(buf));
        struct cursor back;
        assert_int_equal(cursor_parse(buf, n, &back), 0);
        assert_true(back.epoch == cases[i].epoch);
        assert_true(back.seq == cases[i].seq);
    }
}

static void text_form_is_versioned_hex_epoch_and_decimal_seq(void **state)
{
    char buf[CURSOR_TEXT_MAX];
    cursor_format((struct cursor){.epoch = 0xab, .seq = 42}, buf);
    assert_string_equal(buf, "1-00000000000000ab-42");
}

static void format_matches_the_printf_form_at_every_digit_count(void **state)
{
    (void)state;
    uint64_t seq = 0, epoch = 0x0123456789abcdefull;
    for (int i = 0; i < 200; i++) {
        char mine[CURSOR_TEXT_MAX], ref[CURSOR_TEXT_MAX];
        size_t n = cursor_format((struct cursor){.epoch = epoch, .seq = seq}, mine);
        int m = snprintf(ref, sizeof(ref), "1-%016llx-%llu", (unsigned long long)epoch,
                         (unsigned long long)seq);
        assert_string_equal(mine, ref);
        assert_int_equal(n, (size_t)m);
        /* 0, 9, 10, 99, 100, ... and odd values between */
        seq = i % 2 ? seq * 10 + 9 : seq + 1;
        if (seq > UINT64_MAX / 11)
            seq = UINT64_MAX - (uint64_t)i;
        epoch = epoch * 6364136223846793005ull + 1442695040888963407ull;
    }
}

static void malformed_cursors_are_rejected(void **state)
{
    const char *bad[] = {
        "",
        "x",
        "1-00000000000000ab",                      /* no seq */
        "1-00000000000000ab-",                     /* empty seq */
        "2-00000000000000ab-1",                    /* unknown version */
        "1-00000000000000AB-1",                    /* upper-case hex is not canonical */
        "1-0000000000000ab-1",                     /* short epoch */
        "1-00000000000000ab-01",                   /* leading zero */
        "1-00000000000000ab-1x",                   /* trailing garbage */
        "1-00000000000000ab--1",                   /* negative */
        "1-00000000000000ab-18446744073709551616", /* seq overflow */
        "1-zz000000000000ab-1",                    /* not hex */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cursor c;
        assert_int_equal(cursor_parse(bad[i], strlen(bad[i]), &c), -EINVAL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_then_parse_gives_the_same_cursor),
        cmocka_unit_test(format_matches_the_printf_form_at_every_digit_count),
        cmocka_unit_test(text_form_is_versioned_hex_epoch_and_decimal_seq),
        cmocka_unit_test(malformed_cursors_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
