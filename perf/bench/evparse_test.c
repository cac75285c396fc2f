/* evparse: the bench's WatchEvent reader agrees with protobuf-c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "evparse.h"
#include "events/v1/watcher.pb-c.h"

static size_t pack(const Events__V1__WatchEvent *m, uint8_t *buf, size_t cap)
{
    size_t n = events__v1__watch_event__get_packed_size(m);
    assert_true(n <= cap);
    return events__v1__watch_event__pack(m, buf);
}

static void data_fields_are_read(void **state)
{
    Events__V1__WatchEvent m = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Data d = EVENTS__V1__DATA__INIT;
    uint8_t body[] = {1, 2, 3, 0xff};
    d.kind = "quote";
    d.key = "AAPL";
    d.body.data = body;
    d.body.len = sizeof(body);
    d.seq = 123456789012ull;
    d.ingested_at_unix_micros = 1732430000123456;
    d.emitted_at_unix_micros = 1732430000000001;
    d.snapshot = true;
    m.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA;
    m.data = &d;
    m.cursor = "1-00000000deadbeef-123456789012";
    uint8_t buf[256];
    size_t n = pack(&m, buf, sizeof(buf));
    struct evparse_event ev;
    assert_int_equal(evparse_watch_event(buf, n, &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_DATA);
    assert_int_equal(ev.seq, d.seq);
    assert_int_equal(ev.ingested_us, d.ingested_at_unix_micros);
    assert_int_equal(ev.emitted_us, d.emitted_at_unix_micros);
    assert_true(ev.snapshot);
    assert_int_equal(ev.cursor_len, strlen(m.cursor));
    assert_memory_equal(ev.cursor, m.cursor, ev.cursor_len);
}

static void gap_heartbeat_and_end_of_backlog_are_told_apart(void **state)
{
    uint8_t buf[256];
    size_t n;
    struct evparse_event ev;

    Events__V1__WatchEvent m = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Gap g = EVENTS__V1__GAP__INIT;
    g.missed = 40321;
    g.reason = EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER;
    g.from_cursor = "1-00000000deadbeef-7";
    m.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP;
    m.gap = &g;
    m.cursor = "1-00000000deadbeef-40328";
    n = pack(&m, buf, sizeof(buf));
    assert_int_equal(evparse_watch_event(buf, n, &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_GAP);
    assert_int_equal(ev.gap_missed, 40321);
    assert_int_equal(ev.gap_reason, EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER);

    Events__V1__Heartbeat hb = EVENTS__V1__HEARTBEAT__INIT;
    hb.server_unix_micros = 5;
    m = (Events__V1__WatchEvent)EVENTS__V1__WATCH_EVENT__INIT;
    m.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT;
    m.heartbeat = &hb;
    m.cursor = "c";
    n = pack(&m, buf, sizeof(buf));
    assert_int_equal(evparse_watch_event(buf, n, &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_HEARTBEAT);

    /* an empty message still has its length-delimited field on the wire */
    Events__V1__EndOfBacklog eob = EVENTS__V1__END_OF_BACKLOG__INIT;
    m = (Events__V1__WatchEvent)EVENTS__V1__WATCH_EVENT__INIT;
    m.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_END_OF_BACKLOG;
    m.end_of_backlog = &eob;
    m.cursor = "c";
    n = pack(&m, buf, sizeof(buf));
    assert_int_equal(evparse_watch_event(buf, n, &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_END_OF_BACKLOG);
}

static void unknown_fields_are_skipped(void **state)
{
    /* field 20 varint, field 21 fixed64, field 22 fixed32, field 23 bytes,
     * then data{seq=9} */
    const uint8_t buf[] = {0xa0, 0x01, 0x05, 0xa9, 0x01, 1,    2,    3,   4, 5,
                           6,    7,    8,    0xb5, 0x01, 1,    2,    3,   4, 0xba,
                           0x01, 2,    'x',  'y',  0x0a, 0x02, 0x28, 0x09};
    struct evparse_event ev;
    assert_int_equal(evparse_watch_event(buf, sizeof(buf), &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_DATA);
    assert_int_equal(ev.seq, 9);
}

static void malformed_bytes_are_rejected(void **state)
{
    struct evparse_event ev;
    const uint8_t truncated_len[] = {0x0a, 0x05, 0x28};
    const uint8_t truncated_varint[] = {0x0a, 0x02, 0x28, 0x80};
    const uint8_t group[] = {0x0b};
    const uint8_t field_zero[] = {0x00, 0x01};
    const uint8_t endless_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(evparse_watch_event(truncated_len, sizeof(truncated_len), &ev), -EBADMSG);
    assert_int_equal(evparse_watch_event(truncated_varint, sizeof(truncated_varint), &ev),
                     -EBADMSG);
    assert_int_equal(evparse_watch_event(group, sizeof(group), &ev), -EBADMSG);
    assert_int_equal(evparse_watch_event(field_zero, sizeof(field_zero), &ev), -EBADMSG);
    assert_int_equal(evparse_watch_event(endless_varint, sizeof(endless_varint), &ev), -EBADMSG);
    assert_int_equal(evparse_watch_event(group, 0, &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(data_fields_are_read),
        cmocka_unit_test(gap_heartbeat_and_end_of_backlog_are_told_apart),
        cmocka_unit_test(unknown_fields_are_skipped),
        cmocka_unit_test(malformed_bytes_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
