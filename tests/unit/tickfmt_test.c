#include <errno.h>
/*
 * tickfmt: exact prices, times, JSON escaping, and the human and JSON line
 * of every event type.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "market/v1/tick.pb-c.h"
#include "tickfmt.h"

/* 2026-11-24T10:00:01.123456Z */
#define T0_US 1795514401123456LL

/* --- helpers ------------------------------------------------------------- */

typedef int (*formatter)(FILE *, const Events__V1__WatchEvent *);

/* The formatter's output as a string (caller frees). */
static char *render(formatter fn, const Events__V1__WatchEvent *ev)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(fn(f, ev), 0);
    fclose(f);
    return buf;
}

static char *json_string(const char *s, size_t len)
{
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    assert_non_null(f);
    assert_int_equal(tickfmt_json_string(f, s, len), 0);
    fclose(f);
    return buf;
}

static char *price(int64_t mantissa, int32_t exponent)
{
    static char buf[TICKFMT_PRICE_MAX];
    size_t n = tickfmt_price(buf, mantissa, exponent);
    assert_int_equal(n, strlen(buf));
    return buf;
}

/* A Data event; body bytes are copied into a malloc'd buffer freed by data_event_free. */
struct data_event {
    Events__V1__WatchEvent ev;
    Events__V1__Data data;
};

static void data_event_init(struct data_event *de, const char *kind, const char *key,
                            const uint8_t *body, size_t body_len)
{
    events__v1__watch_event__init(&de->ev);
    events__v1__data__init(&de->data);
    de->ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA;
    de->ev.data = &de->data;
    de->ev.cursor = "1-00000000000000ab-123";
    de->data.kind = (char *)kind;
    de->data.key = (char *)key;
    de->data.seq = 123;
    de->data.emitted_at_unix_micros = T0_US;
    de->data.ingested_at_unix_micros = T0_US + 250;
    de->data.body.len = body_len;
    de->data.body.data = malloc(body_len ? body_len : 1);
    assert_non_null(de->data.body.data);
    if (body_len)
        memcpy(de->data.body.data, body, body_len);
}

static void data_event_free(struct data_event *de)
{
    free(de->data.body.data);
}

static void pack_tick(struct data_event *de, const Tickfan__Market__V1__Tick *t)
{
    size_t len = tickfan__market__v1__tick__get_packed_size(t);
    free(de->data.body.data);
    de->data.body.data = malloc(len ? len : 1);
    assert_non_null(de->data.body.data);
    de->data.body.len = tickfan__market__v1__tick__pack(t, de->data.body.data);
}

static void quote_event(struct data_event *de, const char *key, int64_t bid, int64_t bid_size,
                        int64_t ask, int64_t ask_size, int32_t exponent)
{
    Tickfan__Market__V1__Tick t = TICKFAN__MARKET__V1__TICK__INIT;
    Tickfan__Market__V1__Quote q = TICKFAN__MARKET__V1__QUOTE__INIT;
    q.bid_price = bid;
    q.bid_size = bid_size;
    q.ask_price = ask;
    q.ask_size = ask_size;
    t.symbol = (char *)key;
    t.venue = "XNAS";
    t.exchange_time_unix_nanos = 1795514401123000001LL;
    t.price_exponent = exponent;
    t.body_case = TICKFAN__MARKET__V1__TICK__BODY_QUOTE;
    t.quote = &q;
    data_event_init(de, "quote", key, NULL, 0);
    pack_tick(de, &t);
}

static void trade_event(struct data_event *de, const char *key, int64_t px, int64_t size,
                        Tickfan__Market__V1__Side side, int32_t exponent)
{
    Tickfan__Market__V1__Tick t = TICKFAN__MARKET__V1__TICK__INIT;
    Tickfan__Market__V1__Trade tr = TICKFAN__MARKET__V1__TRADE__INIT;
    tr.price = px;
    tr.size = size;
    tr.aggressor_side = side;
    t.symbol = (char *)key;
    t.venue = "XNAS";
    t.exchange_time_unix_nanos = 1795514401123000001LL;
    t.price_exponent = exponent;
    t.body_case = TICKFAN__MARKET__V1__TICK__BODY_TRADE;
    t.trade = &tr;
    data_event_init(de, "trade", key, NULL, 0);
    pack_tick(de, &t);
}

/* --- prices -------------------------------------------------------------- */

static void price_has_exactly_minus_exponent_decimals(void **state)
{
    assert_string_equal(price(1891200, -4), "189.1200");
    assert_string_equal(price(18912, -2), "189.12");
    assert_string_equal(price(1, -1), "0.1");
}

static void price_below_one_unit_is_zero_padded(void **state)
{
    assert_string_equal(price(5, -4), "0.0005");
    assert_string_equal(price(500, -4), "0.0500");
    assert_string_equal(price(0, -2), "0.00");
}

static void price_negative_keeps_sign_and_decimals(void **state)
{
    assert_string_equal(price(-1891200, -4), "-189.1200");
    assert_string_equal(price(-500, -4), "-0.0500");
    assert_string_equal(price(-7, 0), "-7");
}

static void price_exponent_zero_is_a_plain_integer(void **state)
{
    assert_string_equal(price(42, 0), "42");
    assert_string_equal(price(0, 0), "0");
}

static void price_positive_exponent_appends_zeros(void **state)
{
    assert_string_equal(price(42, 2), "4200");
    assert_string_equal(price(-42, 3), "-42000");
    assert_string_equal(price(0, 3), "0");
}

static void price_handles_int64_extremes(void **state)
{
    assert_string_equal(price(INT64_MIN, -2), "-92233720368547758.08");
    assert_string_equal(price(INT64_MAX, -20), "0.09223372036854775807");
    assert_string_equal(price(INT64_MIN, TICKFMT_PRICE_EXP_LIMIT),
                        "-9223372036854775808000000000000000000000000000000");
    assert_true(strlen(price(INT64_MIN, -TICKFMT_PRICE_EXP_LIMIT)) < TICKFMT_PRICE_MAX);
}

static void price_absurd_exponent_falls_back_to_e_notation(void **state)
{
    assert_string_equal(price(5, -40), "5e-40");
    assert_string_equal(price(-5, 99), "-5e99");
    assert_true(strlen(price(INT64_MIN, INT32_MIN)) < TICKFMT_PRICE_MAX);
}

/* --- times --------------------------------------------------------------- */

static void time_is_iso8601_utc_with_micros(void **state)
{
    char buf[TICKFMT_TIME_MAX];
    tickfmt_time_micros(buf, T0_US);
    assert_string_equal(buf, "2026-11-24T10:00:01.123456Z");
    tickfmt_time_micros(buf, 0);
    assert_string_equal(buf, "1970-01-01T00:00:00.000000Z");
}

static void time_before_epoch_rounds_down(void **state)
{
    char buf[TICKFMT_TIME_MAX];
    tickfmt_time_micros(buf, -1);
    assert_string_equal(buf, "1969-12-31T23:59:59.999999Z");
}

/* --- JSON strings -------------------------------------------------------- */

static void json_string_escapes_quote_backslash_and_controls(void **state)
{
    const char in[] = "a\"b\\c\n\t\r\b\f\x01\x1f\x7f/";
    char *s = json_string(in, sizeof(in) - 1);
    assert_string_equal(s, "\"a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001\\u001f\\u007f/\"");
    free(s);
}

static void json_string_keeps_nul_bytes_inside_the_length(void **state)
{
    char *s = json_string("a\0b", 3);
    assert_string_equal(s, "\"a\\u0000b\"");
    free(s);
}

static void json_string_passes_valid_utf8_through(void **state)
{
    const char in[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x88";
    char *s = json_string(in, sizeof(in) - 1);
    assert_string_equal(s, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x88\"");
    free(s);
}

static void json_string_replaces_invalid_utf8(void **state)
{
    /* stray continuation, overlong '/', surrogate, truncated sequence */
    const char in[] = "\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82";
    char *s = json_string(in, sizeof(in) - 1);
    assert_string_equal(s, "\"\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd\"");
    free(s);
}

/* --- human lines --------------------------------------------------------- */

static void human_quote_shows_both_sides_seq_and_cursor(void **state)
{
    struct data_event de;
    quote_event(&de, "AAPL", 1891200, 300, 1891300, 200, -4);
    char *s = render(tickfmt_human, &de.ev);
    assert_string_equal(s, "2026-11-24T10:00:01.123456Z quote AAPL  bid 189.1200 x 300  "
                           "ask 189.1300 x 200  seq=123 cursor=1-00000000000000ab-123\n");
    free(s);
    data_event_free(&de);
}

/* tickfan tail with several topics: one field more, nothing else moves. */
static char *render_topic(int (*fn)(FILE *, const char *, const Events__V1__WatchEvent *),
                          const char *topic, const Events__V1__WatchEvent *ev)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(fn(f, topic, ev), 0);
    fclose(f);
    return buf;
}

static void a_topic_goes_right_before_the_cursor_or_after_the_type(void **state)
{
    struct data_event de;
    quote_event(&de, "AAPL", 1891200, 300, 1891300, 200, -4);
    char *s = render_topic(tickfmt_human_topic, "fx", &de.ev);
    assert_string_equal(s, "2026-11-24T10:00:01.123456Z quote AAPL  bid 189.1200 x 300  "
                           "ask 189.1300 x 200  seq=123 topic=fx cursor=1-00000000000000ab-123\n");
    free(s);
    /* Without a topic, byte for byte the plain line. */
    char *plain = render(tickfmt_human, &de.ev);
    s = render_topic(tickfmt_human_topic, NULL, &de.ev);
    assert_string_equal(s, plain);
    free(s);
    free(plain);
    s = render_topic(tickfmt_json_topic, "fx", &de.ev);
    assert_true(strncmp(s, "{\"type\":\"data\",\"topic\":\"fx\",\"cursor\":", 37) == 0);
    plain = render(tickfmt_json, &de.ev);
    /* The rest of the object is the plain one's. */
    assert_string_equal(s + strlen("{\"type\":\"data\",\"topic\":\"fx\","),
                        plain + strlen("{\"type\":\"data\","));
    free(s);
    free(plain);
    data_event_free(&de);

    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__EndOfBacklog eob = EVENTS__V1__END_OF_BACKLOG__INIT;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_END_OF_BACKLOG;
    ev.end_of_backlog = &eob;
    ev.cursor = "C9";
    s = render_topic(tickfmt_human_topic, "sim", &ev);
    assert_string_equal(s, "end-of-backlog (caught up, live from here) topic=sim cursor=C9\n");
    free(s);
    s = render_topic(tickfmt_json_topic, "s\"m", &ev);
    assert_string_equal(s,
                        "{\"type\":\"end_of_backlog\",\"topic\":\"s\\\"m\",\"cursor\":\"C9\"}\n");
    free(s);
}

static void human_trade_shows_price_size_and_side(void **state)
{
    struct data_event de;
    trade_event(&de, "MSFT", 5123400, 100, TICKFAN__MARKET__V1__SIDE__SIDE_BUY, -4);
    char *s = render(tickfmt_human, &de.ev);
    assert_string_equal(s, "2026-11-24T10:00:01.123456Z trade MSFT  512.3400 x 100 BUY  "
                           "seq=123 cursor=1-00000000000000ab-123\n");
    free(s);
    data_event_free(&de);
}

static void human_trade_without_side_omits_it(void **state)
{
    struct data_event de;
    trade_event(&de, "GE", -25, 7, TICKFAN__MARKET__V1__SIDE__SIDE_UNSPECIFIED, 0);
    char *s = render(tickfmt_human, &de.ev);
    assert_string_equal(s, "2026-11-24T10:00:01.123456Z trade GE    -25 x 7  "
                           "seq=123 cursor=1-00000000000000ab-123\n");
    free(s);
    data_event_free(&de);
}

static void human_marks_snapshot_events(void **state)
{
    struct data_event de;
    quote_event(&de, "AAPL", 1, 1, 2, 1, -2);
    de.data.snapshot = 1;
    char *s = render(tickfmt_human, &de.ev);
    assert_non_null(strstr(s, "  snapshot seq=123 "));
    free(s);
    data_event_free(&de);
}

static void human_other_kind_shows_length_and_first_bytes(void **state)
{
    struct data_event de;
    data_event_init(&de, "news", "ACME", (const uint8_t *)"hello", 5);
    char *s = render(tickfmt_human, &de.ev);
    assert_string_equal(s, "2026-11-24T10:00:01.123456Z news ACME  5 bytes 68656c6c6f  "
                           "seq=123 cursor=1-00000000000000ab-123\n");
    free(s);
    data_event_free(&de);
}

static void human_long_body_is_cut_after_16_bytes(void **state)
{
    struct data_event de;
    data_event_init(&de, "blob", "K", (const uint8_t *)"0123456789abcdefXYZ", 19);
    char *s = render(tickfmt_human, &de.ev);
    assert_non_null(strstr(s, " 19 bytes 30313233343536373839616263646566...  seq="));
    free(s);
    data_event_free(&de);
}

static void human_quote_kind_with_bad_body_falls_back_to_bytes(void **state)
{
    struct data_event de;
    data_event_init(&de, "quote", "AAPL", (const uint8_t *)"\xff\xff", 2);
    char *s = render(tickfmt_human, &de.ev);
    assert_non_null(strstr(s, " quote AAPL  2 bytes ffff  seq=123 "));
    free(s);
    data_event_free(&de);
}

static void human_escapes_control_characters_from_the_server(void **state)
{
    struct data_event de;
    data_event_init(&de, "x\x1b[31m", "K\n", NULL, 0);
    char *s = render(tickfmt_human, &de.ev);
    assert_non_null(strstr(s, " x\\x1b[31m K\\x0a"));
    assert_null(strchr(s, '\x1b'));
    assert_int_equal(strchr(s, '\n') - s, (ptrdiff_t)strlen(s) - 1);
    free(s);
    data_event_free(&de);
}

static void human_heartbeat_shows_server_time_and_cursor(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Heartbeat hb = EVENTS__V1__HEARTBEAT__INIT;
    hb.server_unix_micros = T0_US;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT;
    ev.heartbeat = &hb;
    ev.cursor = "C9";
    char *s = render(tickfmt_human, &ev);
    assert_string_equal(s, "2026-11-24T10:00:01.123456Z heartbeat cursor=C9\n");
    free(s);
}

static void human_end_of_backlog_says_caught_up(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__EndOfBacklog eob = EVENTS__V1__END_OF_BACKLOG__INIT;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_END_OF_BACKLOG;
    ev.end_of_backlog = &eob;
    ev.cursor = "C9";
    char *s = render(tickfmt_human, &ev);
    assert_string_equal(s, "end-of-backlog (caught up, live from here) cursor=C9\n");
    free(s);
}

static void human_gap_names_count_reason_and_range(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Gap gap = EVENTS__V1__GAP__INIT;
    gap.missed = 42;
    gap.reason = EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER;
    gap.from_cursor = "C1";
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP;
    ev.gap = &gap;
    ev.cursor = "C43";
    char *s = render(tickfmt_human, &ev);
    assert_string_equal(
        s, "gap: missed 42 events, reason GAP_SLOW_CONSUMER, from_cursor=C1 cursor=C43\n");
    free(s);

    gap.missed = 1;
    gap.reason = 77;
    s = render(tickfmt_human, &ev);
    assert_string_equal(s, "gap: missed 1 event, reason 77, from_cursor=C1 cursor=C43\n");
    free(s);
}

static void human_unknown_payload_still_shows_cursor(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    ev.cursor = "C5";
    char *s = render(tickfmt_human, &ev);
    assert_non_null(strstr(s, "unknown event"));
    assert_non_null(strstr(s, "cursor=C5\n"));
    free(s);
}

/* --- JSON lines ---------------------------------------------------------- */

static void json_quote_has_prices_as_strings(void **state)
{
    struct data_event de;
    quote_event(&de, "AAPL", 1891200, 300, 1891300, 200, -4);
    char *s = render(tickfmt_json, &de.ev);
    assert_string_equal(
        s, "{\"type\":\"data\",\"cursor\":\"1-00000000000000ab-123\",\"seq\":123,"
           "\"kind\":\"quote\",\"key\":\"AAPL\",\"emitted_at_unix_micros\":1795514401123456,"
           "\"ingested_at_unix_micros\":1795514401123706,\"snapshot\":false,"
           "\"quote\":{\"bid\":\"189.1200\",\"bid_size\":300,\"ask\":\"189.1300\","
           "\"ask_size\":200},\"exchange_time_unix_nanos\":1795514401123000001,"
           "\"venue\":\"XNAS\"}\n");
    free(s);
    data_event_free(&de);
}

static void json_trade_has_side_name(void **state)
{
    struct data_event de;
    trade_event(&de, "MSFT", -5123400, 100, TICKFAN__MARKET__V1__SIDE__SIDE_SELL, -4);
    de.data.snapshot = 1;
    char *s = render(tickfmt_json, &de.ev);
    assert_non_null(strstr(s, "\"snapshot\":true,"
                              "\"trade\":{\"price\":\"-512.3400\",\"size\":100,"
                              "\"side\":\"SIDE_SELL\"},\"exchange_time_unix_nanos\":"));
    assert_null(strstr(s, "body_base64"));
    free(s);
    data_event_free(&de);
}

static void json_other_body_is_base64(void **state)
{
    static const struct {
        const char *body;
        size_t len;
        const char *b64;
    } cases[] = {
        {"", 0, ""},        {"a", 1, "YQ=="},         {"\x00\xff", 2, "AP8="},
        {"abc", 3, "YWJj"}, {"hello", 5, "aGVsbG8="},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct data_event de;
        char want[64];
        data_event_init(&de, "news", "ACME", (const uint8_t *)cases[i].body, cases[i].len);
        char *s = render(tickfmt_json, &de.ev);
        snprintf(want, sizeof(want), ",\"snapshot\":false,\"body_base64\":\"%s\"}\n", cases[i].b64);
        assert_non_null(strstr(s, want));
        free(s);
        data_event_free(&de);
    }
}

static void json_escapes_server_strings(void **state)
{
    struct data_event de;
    data_event_init(&de, "k\"ind", "ke\\y", NULL, 0);
    de.ev.cursor = "c\n";
    char *s = render(tickfmt_json, &de.ev);
    assert_non_null(strstr(s, "\"cursor\":\"c\\n\""));
    assert_non_null(strstr(s, "\"kind\":\"k\\\"ind\",\"key\":\"ke\\\\y\""));
    free(s);
    data_event_free(&de);
}

static void json_heartbeat_has_server_time(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Heartbeat hb = EVENTS__V1__HEARTBEAT__INIT;
    hb.server_unix_micros = T0_US;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT;
    ev.heartbeat = &hb;
    ev.cursor = "C9";
    char *s = render(tickfmt_json, &ev);
    assert_string_equal(
        s, "{\"type\":\"heartbeat\",\"cursor\":\"C9\",\"server_unix_micros\":1795514401123456}\n");
    free(s);
}

static void json_end_of_backlog_has_cursor(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__EndOfBacklog eob = EVENTS__V1__END_OF_BACKLOG__INIT;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_END_OF_BACKLOG;
    ev.end_of_backlog = &eob;
    ev.cursor = "C9";
    char *s = render(tickfmt_json, &ev);
    assert_string_equal(s, "{\"type\":\"end_of_backlog\",\"cursor\":\"C9\"}\n");
    free(s);
}

static void json_gap_has_reason_name_or_number(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Gap gap = EVENTS__V1__GAP__INIT;
    gap.missed = 42;
    gap.reason = EVENTS__V1__GAP_REASON__GAP_RETENTION;
    gap.from_cursor = "C1";
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP;
    ev.gap = &gap;
    ev.cursor = "C43";
    char *s = render(tickfmt_json, &ev);
    assert_string_equal(s, "{\"type\":\"gap\",\"cursor\":\"C43\",\"missed\":42,"
                           "\"reason\":\"GAP_RETENTION\",\"from_cursor\":\"C1\"}\n");
    free(s);

    gap.reason = 77;
    s = render(tickfmt_json, &ev);
    assert_non_null(strstr(s, "\"reason\":77,"));
    free(s);
}

static void json_unknown_payload_has_type_unknown(void **state)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    ev.cursor = "C5";
    char *s = render(tickfmt_json, &ev);
    assert_string_equal(s, "{\"type\":\"unknown\",\"cursor\":\"C5\"}\n");
    free(s);
}

static void start_time_parses_rfc3339_utc_and_unix_micros(void **state)
{
    (void)state;
    int64_t us;
    assert_int_equal(tickfmt_parse_time("1970-01-01T00:00:00Z", &us), 0);
    assert_int_equal(us, 0);
    assert_int_equal(tickfmt_parse_time("2026-11-24T06:35:00Z", &us), 0);
    assert_int_equal(us, 1795502100000000LL);
    assert_int_equal(tickfmt_parse_time("2026-11-24T06:35:00.5Z", &us), 0);
    assert_int_equal(us, 1795502100500000LL);
    assert_int_equal(tickfmt_parse_time("2000-02-29T23:59:59.000001Z", &us), 0);
    assert_int_equal(us, 951868799000001LL);
    assert_int_equal(tickfmt_parse_time("1795502781323766", &us), 0);
    assert_int_equal(us, 1795502781323766LL);
    const char *bad[] = {"",
                         "yesterday",
                         "2026-11-24",
                         "2026-11-24T06:35:00",
                         "2026-13-01T00:00:00Z",
                         "2026-11-24T06:35:00+01:00",
                         "2026-11-24T06:35:00.1234567Z",
                         "-5",
                         "2026-11-24T25:00:00Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tickfmt_parse_time(bad[i], &us), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(start_time_parses_rfc3339_utc_and_unix_micros),
        cmocka_unit_test(price_has_exactly_minus_exponent_decimals),
        cmocka_unit_test(price_below_one_unit_is_zero_padded),
        cmocka_unit_test(price_negative_keeps_sign_and_decimals),
        cmocka_unit_test(price_exponent_zero_is_a_plain_integer),
        cmocka_unit_test(price_positive_exponent_appends_zeros),
        cmocka_unit_test(price_handles_int64_extremes),
        cmocka_unit_test(price_absurd_exponent_falls_back_to_e_notation),
        cmocka_unit_test(time_is_iso8601_utc_with_micros),
        cmocka_unit_test(time_before_epoch_rounds_down),
        cmocka_unit_test(json_string_escapes_quote_backslash_and_controls),
        cmocka_unit_test(json_string_keeps_nul_bytes_inside_the_length),
        cmocka_unit_test(json_string_passes_valid_utf8_through),
        cmocka_unit_test(json_string_replaces_invalid_utf8),
        cmocka_unit_test(human_quote_shows_both_sides_seq_and_cursor),
        cmocka_unit_test(human_trade_shows_price_size_and_side),
        cmocka_unit_test(human_trade_without_side_omits_it),
        cmocka_unit_test(human_marks_snapshot_events),
        cmocka_unit_test(human_other_kind_shows_length_and_first_bytes),
        cmocka_unit_test(human_long_body_is_cut_after_16_bytes),
        cmocka_unit_test(human_quote_kind_with_bad_body_falls_back_to_bytes),
        cmocka_unit_test(human_escapes_control_characters_from_the_server),
        cmocka_unit_test(human_heartbeat_shows_server_time_and_cursor),
        cmocka_unit_test(human_end_of_backlog_says_caught_up),
        cmocka_unit_test(human_gap_names_count_reason_and_range),
        cmocka_unit_test(human_unknown_payload_still_shows_cursor),
        cmocka_unit_test(json_quote_has_prices_as_strings),
        cmocka_unit_test(json_trade_has_side_name),
        cmocka_unit_test(json_other_body_is_base64),
        cmocka_unit_test(json_escapes_server_strings),
        cmocka_unit_test(json_heartbeat_has_server_time),
        cmocka_unit_test(json_end_of_backlog_has_cursor),
        cmocka_unit_test(json_gap_has_reason_name_or_number),
        cmocka_unit_test(json_unknown_payload_has_type_unknown),
        cmocka_unit_test(a_topic_goes_right_before_the_cursor_or_after_the_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
