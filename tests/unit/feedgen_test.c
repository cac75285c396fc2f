/* feedgen: deterministic frames, sequence numbers and drops, padded bodies. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "feedframe.h"
#include "feedgen.h"
#include "market/v1/tick.pb-c.h"

#define T0_US 1795502100000000LL

static feedgen_t *make(uint64_t start_seq, const struct feedgen_range *drops, size_t ndrops,
                       size_t body_size)
{
    struct feedgen_options o = {.topic = "md",
                                .symbols = "AAPL,MSFT,IBM",
                                .seed = 42,
                                .channel = 3,
                                .start_seq = start_seq,
                                .drops = drops,
                                .ndrops = ndrops,
                                .body_size = body_size};
    feedgen_t *g;
    assert_int_equal(feedgen_create(&g, &o), 0);
    return g;
}

static void the_same_options_give_the_same_frames(void **state)
{
    feedgen_t *a = make(1, NULL, 0, 0), *b = make(1, NULL, 0, 0);
    for (int i = 0; i < 1000; i++) {
        const uint8_t *fa, *fb;
        size_t na = feedgen_next(a, T0_US + i, &fa);
        size_t nb = feedgen_next(b, T0_US + i, &fb);
        assert_true(na > FEEDFRAME_HDR);
        assert_int_equal(na, nb);
        assert_memory_equal(fa, fb, na);
    }
    feedgen_destroy(a);
    feedgen_destroy(b);
}

static void every_frame_is_a_tick_keyed_by_its_symbol(void **state)
{
    feedgen_t *g = make(1, NULL, 0, 0);
    size_t trades = 0;
    for (int i = 0; i < 500; i++) {
        const uint8_t *frame;
        size_t n = feedgen_next(g, T0_US + i, &frame);
        struct feedframe f;
        size_t len;
        assert_int_equal(feedframe_decode(frame, n, &f, &len), FEEDFRAME_OK);
        assert_int_equal(len, n);
        assert_int_equal(f.channel, 3);
        assert_int_equal(f.source_seq, (uint64_t)i + 1);
        assert_int_equal(f.source_time_us, T0_US + i);
        assert_memory_equal(f.topic, "md", 2);
        Tickfan__Market__V1__Tick *t =
            tickfan__market__v1__tick__unpack(NULL, f.rec.body_len, f.rec.body);
        assert_non_null(t);
        assert_int_equal(strlen(t->symbol), f.rec.key_len);
        assert_memory_equal(t->symbol, f.rec.key, f.rec.key_len);
        assert_int_equal(t->exchange_time_unix_nanos, (T0_US + i) * 1000);
        bool trade = t->body_case == TICKFAN__MARKET__V1__TICK__BODY_TRADE;
        assert_int_equal(f.rec.kind_len, 5);
        assert_memory_equal(f.rec.kind, trade ? "trade" : "quote", 5);
        trades += trade;
        tickfan__market__v1__tick__free_unpacked(t, NULL);
    }
    assert_true(trades > 0 && trades < 500);
    feedgen_destroy(g);
}

static void dropped_seqs_are_made_but_not_returned_and_shift_nothing(void **state)
{
    struct feedgen_range drops[] = {{9, 11}, {7, 7}, {10, 12}}; /* unsorted, overlapping */
    feedgen_t *plain = make(5, NULL, 0, 0), *g = make(5, drops, 3, 0);
    for (uint64_t seq = 5; seq < 40; seq++) {
        const uint8_t *fp, *fg;
        assert_int_equal(feedgen_next_seq(g), seq);
        size_t np = feedgen_next(plain, T0_US, &fp);
        size_t ng = feedgen_next(g, T0_US, &fg);
        if (seq == 7 || (seq >= 9 && seq <= 12)) {
            assert_int_equal(ng, 0);
            continue;
        }
        assert_int_equal(ng, np);
        assert_memory_equal(fg, fp, np);
    }
    feedgen_destroy(plain);
    feedgen_destroy(g);
}

static void padded_bodies_decode_as_the_same_tick(void **state)
{
    uint8_t body[2048];
    /* a real encoded Tick, then every size from below it to past 16 KiB
     * boundaries of the length varint */
    Tickfan__Market__V1__Tick tick = TICKFAN__MARKET__V1__TICK__INIT;
    Tickfan__Market__V1__Quote q = TICKFAN__MARKET__V1__QUOTE__INIT;
    tick.symbol = "AAPL";
    tick.venue = "SIMX";
    tick.body_case = TICKFAN__MARKET__V1__TICK__BODY_QUOTE;
    tick.quote = &q;
    q.bid_price = 1234567;
    size_t natural = tickfan__market__v1__tick__pack(&tick, body);
    uint8_t *big = malloc(20000);
    for (size_t size = 0; size < 18000; size += size < 400 ? 1 : 97) {
        memcpy(big, body, natural);
        size_t n = feedgen_pad(big, natural, size);
        if (size <= natural)
            assert_int_equal(n, natural);
        else if (size == natural + 1)
            assert_int_equal(n, size + 1);
        else
            assert_int_equal(n, size);
        Tickfan__Market__V1__Tick *t = tickfan__market__v1__tick__unpack(NULL, n, big);
        assert_non_null(t);
        assert_string_equal(t->symbol, "AAPL");
        assert_int_equal(t->body_case, TICKFAN__MARKET__V1__TICK__BODY_QUOTE);
        assert_int_equal(t->quote->bid_price, 1234567);
        tickfan__market__v1__tick__free_unpacked(t, NULL);
    }
    free(big);
}

static void body_size_pads_every_generated_body(void **state)
{
    feedgen_t *g = make(1, NULL, 0, 100);
    assert_true(feedgen_max_frame(g) >= FEEDFRAME_HDR + 2 + 5 + 4 + 101);
    for (int i = 0; i < 300; i++) {
        const uint8_t *frame;
        size_t n = feedgen_next(g, T0_US, &frame);
        struct feedframe f;
        size_t len;
        assert_int_equal(feedframe_decode(frame, n, &f, &len), FEEDFRAME_OK);
        assert_true(f.rec.body_len == 100 || f.rec.body_len == 101);
        assert_true(n <= feedgen_max_frame(g));
    }
    feedgen_destroy(g);
}

static void bad_options_are_refused(void **state)
{
    feedgen_t *g = (feedgen_t *)1;
    struct feedgen_options o = {.topic = "md", .symbols = "AAPL", .start_seq = 1};
    o.topic = "a/b";
    assert_int_equal(feedgen_create(&g, &o), -EINVAL);
    assert_null(g);
    o.topic = "md";
    o.symbols = "AAPL,,MSFT";
    assert_int_equal(feedgen_create(&g, &o), -EINVAL);
    o.symbols = "AAPL";
    o.start_seq = 0;
    assert_int_equal(feedgen_create(&g, &o), -EINVAL);
    o.start_seq = 1;
    o.body_size = FEEDGEN_BODY_MAX + 1;
    assert_int_equal(feedgen_create(&g, &o), -EINVAL);
    struct feedgen_range backwards = {5, 4};
    o.body_size = 0;
    o.drops = &backwards;
    o.ndrops = 1;
    assert_int_equal(feedgen_create(&g, &o), -EINVAL);
    assert_null(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_same_options_give_the_same_frames),
        cmocka_unit_test(every_frame_is_a_tick_keyed_by_its_symbol),
        cmocka_unit_test(dropped_seqs_are_made_but_not_returned_and_shift_nothing),
        cmocka_unit_test(padded_bodies_decode_as_the_same_tick),
        cmocka_unit_test(body_size_pads_every_generated_body),
        cmocka_unit_test(bad_options_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
