/* feedframe: encode/decode round trip, and every way a frame is rejected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "feedframe.h"

static size_t sample(uint8_t *buf)
{
    struct feedframe f = {.channel = 7,
                          .source_seq = 42,
                          .source_time_us = 1795502100000000LL,
                          .topic = "mkt",
                          .topic_len = 3,
                          .rec.kind = "quote",
                          .rec.kind_len = 5,
                          .rec.key = "AAPL",
                          .rec.key_len = 4,
                          .rec.body = (const uint8_t *)"\x01\x02\x03",
                          .rec.body_len = 3};
    return feedframe_encode(&f, buf);
}

static void encoded_frame_decodes_to_the_same_fields(void **state)
{
    uint8_t buf[128];
    size_t n = sample(buf);
    assert_int_equal(n, 40 + 3 + 5 + 4 + 3);
    struct feedframe f;
    size_t len;
    assert_int_equal(feedframe_decode(buf, n, &f, &len), FEEDFRAME_OK);
    assert_int_equal(len, n);
    assert_int_equal(f.channel, 7);
    assert_int_equal(f.source_seq, 42);
    assert_int_equal(f.source_time_us, 1795502100000000LL);
    assert_memory_equal(f.topic, "mkt", 3);
    assert_memory_equal(f.rec.kind, "quote", 5);
    assert_memory_equal(f.rec.key, "AAPL", 4);
    assert_memory_equal(f.rec.body, "\x01\x02\x03", 3);
}

static void every_prefix_of_a_frame_needs_more(void **state)
{
    uint8_t buf[128];
    size_t n = sample(buf);
    for (size_t cut = 0; cut < n; cut++) {
        struct feedframe f;
        size_t len;
        assert_int_equal(feedframe_decode(buf, cut, &f, &len), FEEDFRAME_NEED_MORE);
    }
}

static void malformed_headers_are_rejected_with_their_reason(void **state)
{
    uint8_t good[128], buf[128];
    size_t n = sample(good);
    struct feedframe f;
    size_t len;
    struct {
        size_t off;
        uint8_t val;
        enum feedframe_error want;
    } cases[] = {
        {0, 'X', FEEDFRAME_BAD_MAGIC},   {1, 'X', FEEDFRAME_BAD_MAGIC},
        {2, 2, FEEDFRAME_BAD_VERSION},   {3, 9, FEEDFRAME_BAD_TYPE},
        {4, 0xff, FEEDFRAME_BAD_LENGTH}, /* length does not add up */
        {7, 0x10, FEEDFRAME_OVERSIZE},   /* length beyond 1 MiB */
        {32, 0, FEEDFRAME_BAD_LENGTH},   /* empty topic */
        {40, '/', FEEDFRAME_BAD_TOPIC},  /* invalid character, length intact */
        {44, 0, FEEDFRAME_BAD_TEXT},     /* a NUL in the kind */
        {49, 0xff, FEEDFRAME_BAD_TEXT},  /* the key not UTF-8 */
        {51, 0xc3, FEEDFRAME_BAD_TEXT},  /* the key ends inside a sequence */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(buf, good, n);
        buf[cases[i].off] = cases[i].val;
        assert_int_equal(feedframe_decode(buf, n, &f, &len), cases[i].want);
        /* only a bad topic or text leaves a length that can be trusted */
        bool skippable =
            cases[i].want == FEEDFRAME_BAD_TOPIC || cases[i].want == FEEDFRAME_BAD_TEXT;
        assert_int_equal(len, skippable ? n : 0);
    }
}

static void parts_out_of_bounds_are_not_encoded(void **state)
{
    uint8_t buf[512];
    struct feedframe f = {.topic = "t", .topic_len = 0};
    assert_int_equal(feedframe_encode(&f, buf), 0);
    char big[300];
    memset(big, 'k', sizeof(big));
    f = (struct feedframe){.topic = "t", .topic_len = 1, .rec.key = big, .rec.key_len = 256};
    assert_int_equal(feedframe_encode(&f, buf), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encoded_frame_decodes_to_the_same_fields),
        cmocka_unit_test(every_prefix_of_a_frame_needs_more),
        cmocka_unit_test(malformed_headers_are_rejected_with_their_reason),
        cmocka_unit_test(parts_out_of_bounds_are_not_encoded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
