/* subparse: the bench's SubscribeResponse reader agrees with protobuf-c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "evparse.h"
#include "subparse.h"
#include "events/v1/watcher.pb-c.h"

#define CAP 512

static size_t pack(const Events__V1__SubscribeResponse *m, uint8_t *buf, size_t cap)
{
    size_t n = events__v1__subscribe_response__get_packed_size(m);
    assert_true(n <= cap);
    return events__v1__subscribe_response__pack(m, buf);
}

/* Every delivery of buf as subparse reads it, against protobuf-c's reading
 * of the same bytes: payload case, ids, end fields, and the event bytes
 * through evparse against the unpacked WatchEvent. */
static void agree_with_protobuf_c(const uint8_t *buf, size_t n)
{
    Events__V1__SubscribeResponse *m = events__v1__subscribe_response__unpack(NULL, n, buf);
    assert_non_null(m);
    struct subparse_response it;
    struct subparse_delivery d;
    uint32_t ids[CAP];
    subparse_init(&it, buf, n);
    for (size_t i = 0; i < m->n_deliveries; i++) {
        const Events__V1__Delivery *want = m->deliveries[i];
        assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
        assert_int_equal(d.n_ids, want->n_ids);
        for (size_t k = 0; k < d.n_ids; k++)
            assert_int_equal(d.ids[k], want->ids[k]);
        switch (want->payload_case) {
        case EVENTS__V1__DELIVERY__PAYLOAD_EVENT: {
            assert_int_equal(d.kind, SUBPARSE_EVENT);
            struct evparse_event ev;
            assert_int_equal(evparse_watch_event(d.event, d.event_len, &ev), 0);
            const Events__V1__WatchEvent *we = want->event;
            switch (we->payload_case) {
            case EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA:
                assert_int_equal(ev.kind, EVPARSE_DATA);
                assert_int_equal(ev.seq, we->data->seq);
                assert_int_equal(ev.emitted_us, we->data->emitted_at_unix_micros);
                assert_int_equal(ev.ingested_us, we->data->ingested_at_unix_micros);
                break;
            case EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT:
                assert_int_equal(ev.kind, EVPARSE_HEARTBEAT);
                break;
            case EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP:
                assert_int_equal(ev.kind, EVPARSE_GAP);
                assert_int_equal(ev.gap_missed, we->gap->missed);
                break;
            default:
                break;
            }
            assert_int_equal(ev.cursor_len, strlen(we->cursor));
            assert_memory_equal(ev.cursor, we->cursor, ev.cursor_len);
            break;
        }
        case EVENTS__V1__DELIVERY__PAYLOAD_END: {
            const Events__V1__SubscriptionEnd *e = want->end;
            assert_int_equal(d.kind, SUBPARSE_END);
            assert_int_equal(d.end_code, e->code);
            assert_int_equal(d.end_message_len, strlen(e->message));
            assert_memory_equal(d.end_message, e->message, d.end_message_len);
            assert_int_equal(d.end_cursor_len, strlen(e->cursor));
            assert_memory_equal(d.end_cursor, e->cursor, d.end_cursor_len);
            assert_int_equal(d.end_earliest_cursor_len, strlen(e->earliest_cursor));
            assert_memory_equal(d.end_earliest_cursor, e->earliest_cursor,
                                d.end_earliest_cursor_len);
            break;
        }
        default:
            assert_int_equal(d.kind, SUBPARSE_NONE);
        }
    }
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 0);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 0);
    events__v1__subscribe_response__free_unpacked(m, NULL);
}

static void events_and_ends_with_their_ids_are_read(void **state)
{
    Events__V1__Data data = EVENTS__V1__DATA__INIT;
    data.kind = "quote";
    data.key = "AAPL";
    data.seq = 123456789012ull;
    data.ingested_at_unix_micros = 1732430000123456;
    data.emitted_at_unix_micros = 1732430000000001;
    Events__V1__WatchEvent ev1 = EVENTS__V1__WATCH_EVENT__INIT;
    ev1.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA;
    ev1.data = &data;
    ev1.cursor = "1-00000000deadbeef-123456789012";
    uint32_t ids1[] = {1, 2, 125, 127, 128, 16384, 300000, UINT32_MAX};
    Events__V1__Delivery d1 = EVENTS__V1__DELIVERY__INIT;
    d1.payload_case = EVENTS__V1__DELIVERY__PAYLOAD_EVENT;
    d1.event = &ev1;
    d1.ids = ids1;
    d1.n_ids = sizeof(ids1) / sizeof(ids1[0]);

    Events__V1__SubscriptionEnd end = EVENTS__V1__SUBSCRIPTION_END__INIT;
    end.code = 8; /* RESOURCE_EXHAUSTED */
    end.message = "slow consumer: lag budget exceeded";
    end.cursor = "1-00000000deadbeef-77";
    end.earliest_cursor = "1-00000000deadbeef-1";
    uint32_t ids2[] = {7};
    Events__V1__Delivery d2 = EVENTS__V1__DELIVERY__INIT;
    d2.payload_case = EVENTS__V1__DELIVERY__PAYLOAD_END;
    d2.end = &end;
    d2.ids = ids2;
    d2.n_ids = 1;

    Events__V1__Heartbeat hb = EVENTS__V1__HEARTBEAT__INIT;
    hb.server_unix_micros = 5;
    Events__V1__WatchEvent ev3 = EVENTS__V1__WATCH_EVENT__INIT;
    ev3.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT;
    ev3.heartbeat = &hb;
    ev3.cursor = "c";
    uint32_t ids3[] = {3, 4};
    Events__V1__Delivery d3 = EVENTS__V1__DELIVERY__INIT;
    d3.payload_case = EVENTS__V1__DELIVERY__PAYLOAD_EVENT;
    d3.event = &ev3;
    d3.ids = ids3;
    d3.n_ids = 2;

    /* an end with a negative code (sign-extended to ten bytes on the wire) */
    Events__V1__SubscriptionEnd end4 = EVENTS__V1__SUBSCRIPTION_END__INIT;
    end4.code = -1;
    Events__V1__Delivery d4 = EVENTS__V1__DELIVERY__INIT;
    d4.payload_case = EVENTS__V1__DELIVERY__PAYLOAD_END;
    d4.end = &end4;
    d4.ids = ids2;
    d4.n_ids = 1;

    Events__V1__Delivery *ds[] = {&d1, &d2, &d3, &d4};
    Events__V1__SubscribeResponse m = EVENTS__V1__SUBSCRIBE_RESPONSE__INIT;
    m.deliveries = ds;
    m.n_deliveries = 4;
    uint8_t buf[1024];
    size_t n = pack(&m, buf, sizeof(buf));
    agree_with_protobuf_c(buf, n);

    /* and the figures themselves, not only the agreement */
    struct subparse_response it;
    struct subparse_delivery d;
    uint32_t ids[CAP];
    struct evparse_event ev;
    subparse_init(&it, buf, n);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_EVENT);
    assert_int_equal(d.n_ids, 8);
    assert_int_equal(d.ids[6], 300000);
    assert_int_equal(d.ids[7], UINT32_MAX);
    assert_int_equal(evparse_watch_event(d.event, d.event_len, &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_DATA);
    assert_int_equal(ev.seq, 123456789012ull);
    assert_int_equal(ev.emitted_us, 1732430000000001);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_END);
    assert_int_equal(d.end_code, 8);
    assert_int_equal(d.n_ids, 1);
    assert_int_equal(d.ids[0], 7);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_EVENT);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_END);
    assert_int_equal(d.end_code, -1);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 0);
}

static void empty_response_and_empty_delivery(void **state)
{
    struct subparse_response it;
    struct subparse_delivery d;
    uint32_t ids[CAP];
    subparse_init(&it, NULL, 0);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 0);
    /* one delivery with no payload and no ids */
    const uint8_t empty[] = {0x0a, 0x00};
    subparse_init(&it, empty, sizeof(empty));
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_NONE);
    assert_int_equal(d.n_ids, 0);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 0);
    agree_with_protobuf_c(empty, sizeof(empty));
}

static void unpacked_and_split_ids_and_unknown_fields(void **state)
{
    /* SubscribeResponse: field 9 varint (unknown), then one delivery:
     *   ids unpacked 5, field 20 bytes "xy" (unknown), packed [6, 300],
     *   event {heartbeat{}}, ids unpacked 7, packed [] (empty run)
     * then field 10 fixed32 (unknown) */
    const uint8_t buf[] = {0x48, 0x01,                   /* 9: 1 */
                           0x0a, 20,                     /* delivery, 20 bytes */
                           0x10, 0x05,                   /* ids: 5 */
                           0xa2, 0x01, 0x02, 'x',  'y',  /* 20: "xy" */
                           0x12, 0x03, 0x06, 0xac, 0x02, /* ids: [6, 300] */
                           0x0a, 0x02, 0x12, 0x00,       /* event {heartbeat{}} */
                           0x10, 0x07,                   /* ids: 7 */
                           0x12, 0x00,                   /* ids: [] */
                           0x55, 1,    2,    3,    4};   /* 10: fixed32 */
    struct subparse_response it;
    struct subparse_delivery d;
    uint32_t ids[CAP];
    subparse_init(&it, buf, sizeof(buf));
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_EVENT);
    assert_int_equal(d.n_ids, 4);
    assert_int_equal(d.ids[0], 5);
    assert_int_equal(d.ids[1], 6);
    assert_int_equal(d.ids[2], 300);
    assert_int_equal(d.ids[3], 7);
    struct evparse_event ev;
    assert_int_equal(evparse_watch_event(d.event, d.event_len, &ev), 0);
    assert_int_equal(ev.kind, EVPARSE_HEARTBEAT);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 0);
    agree_with_protobuf_c(buf, sizeof(buf));
}

static void the_last_payload_wins(void **state)
{
    /* event then end: an end; end then event: an event (oneof) */
    const uint8_t end_last[] = {0x0a, 0x08, 0x0a, 0x02, 0x12, 0x00, 0x1a, 0x02, 0x08, 0x05};
    const uint8_t event_last[] = {0x0a, 0x08, 0x1a, 0x02, 0x08, 0x05, 0x0a, 0x02, 0x12, 0x00};
    struct subparse_response it;
    struct subparse_delivery d;
    uint32_t ids[CAP];
    subparse_init(&it, end_last, sizeof(end_last));
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_END);
    assert_int_equal(d.end_code, 5);
    agree_with_protobuf_c(end_last, sizeof(end_last));
    subparse_init(&it, event_last, sizeof(event_last));
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.kind, SUBPARSE_EVENT);
    agree_with_protobuf_c(event_last, sizeof(event_last));
}

static void malformed_bytes_are_rejected(void **state)
{
    struct subparse_response it;
    struct subparse_delivery d;
    uint32_t ids[CAP];
    const uint8_t truncated_delivery[] = {0x0a, 0x05, 0x10};
    const uint8_t truncated_packed_id[] = {0x0a, 0x04, 0x12, 0x02, 0x01, 0x80};
    const uint8_t packed_past_delivery[] = {0x0a, 0x03, 0x12, 0x03, 0x01, 0x02, 0x03};
    const uint8_t id_beyond_32_bits[] = {0x0a, 0x06, 0x10, 0x80, 0x80, 0x80, 0x80, 0x10};
    const uint8_t group_in_delivery[] = {0x0a, 0x01, 0x0b};
    const uint8_t field_zero[] = {0x00, 0x01};
    const uint8_t bad_end[] = {0x0a, 0x03, 0x1a, 0x01, 0x08};
    const uint8_t *bad[] = {truncated_delivery,
                            truncated_packed_id,
                            packed_past_delivery,
                            id_beyond_32_bits,
                            group_in_delivery,
                            field_zero,
                            bad_end};
    const size_t len[] = {sizeof(truncated_delivery),
                          sizeof(truncated_packed_id),
                          sizeof(packed_past_delivery),
                          sizeof(id_beyond_32_bits),
                          sizeof(group_in_delivery),
                          sizeof(field_zero),
                          sizeof(bad_end)};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        subparse_init(&it, bad[i], len[i]);
        assert_int_equal(subparse_next(&it, &d, ids, CAP), -EBADMSG);
        /* and nothing more is read from it */
        assert_int_equal(subparse_next(&it, &d, ids, CAP), 0);
    }
    /* a good delivery, then a broken one: the first is read */
    const uint8_t good_then_bad[] = {0x0a, 0x02, 0x10, 0x01, 0x0a, 0x05, 0x10};
    subparse_init(&it, good_then_bad, sizeof(good_then_bad));
    assert_int_equal(subparse_next(&it, &d, ids, CAP), 1);
    assert_int_equal(d.n_ids, 1);
    assert_int_equal(subparse_next(&it, &d, ids, CAP), -EBADMSG);
}

static void more_ids_than_room(void **state)
{
    const uint8_t three[] = {0x0a, 0x05, 0x12, 0x03, 0x01, 0x02, 0x03};
    struct subparse_response it;
    struct subparse_delivery d;
    uint32_t ids[3];
    subparse_init(&it, three, sizeof(three));
    assert_int_equal(subparse_next(&it, &d, ids, 2), -ENOSPC);
    subparse_init(&it, three, sizeof(three));
    assert_int_equal(subparse_next(&it, &d, ids, 3), 1);
    assert_int_equal(d.n_ids, 3);
    assert_int_equal(d.ids[2], 3);
}

/* Many random responses, as the server could write them, read alike. */
static void random_responses_agree(void **state)
{
    srand(12345);
    static uint8_t buf[1 << 20];
    for (int round = 0; round < 200; round++) {
        size_t nd = (size_t)(rand() % 40);
        Events__V1__Delivery *ds = calloc(nd + 1, sizeof(*ds));
        Events__V1__Delivery **dp = calloc(nd + 1, sizeof(*dp));
        Events__V1__WatchEvent *evs = calloc(nd + 1, sizeof(*evs));
        Events__V1__Data *data = calloc(nd + 1, sizeof(*data));
        Events__V1__Gap *gaps = calloc(nd + 1, sizeof(*gaps));
        Events__V1__SubscriptionEnd *ends = calloc(nd + 1, sizeof(*ends));
        uint32_t *ids = calloc((nd + 1) * CAP, sizeof(*ids));
        Events__V1__Heartbeat hb = EVENTS__V1__HEARTBEAT__INIT;
        assert_true(ds && dp && evs && data && gaps && ends && ids);
        for (size_t i = 0; i < nd; i++) {
            Events__V1__Delivery *d = &ds[i];
            *d = (Events__V1__Delivery)EVENTS__V1__DELIVERY__INIT;
            d->n_ids = (size_t)(rand() % 130);
            d->ids = &ids[i * CAP];
            for (size_t k = 0; k < d->n_ids; k++)
                d->ids[k] = (uint32_t)(rand() % 4 ? rand() % 126 + 1 : rand());
            int what = rand() % 5;
            if (what == 4) {
                ends[i] = (Events__V1__SubscriptionEnd)EVENTS__V1__SUBSCRIPTION_END__INIT;
                ends[i].code = rand() % 17;
                ends[i].message = rand() % 2 ? "stale cursor" : "";
                ends[i].cursor = rand() % 2 ? "1-00000000deadbeef-9" : "";
                d->payload_case = EVENTS__V1__DELIVERY__PAYLOAD_END;
                d->end = &ends[i];
            } else {
                Events__V1__WatchEvent *e = &evs[i];
                *e = (Events__V1__WatchEvent)EVENTS__V1__WATCH_EVENT__INIT;
                e->cursor = "1-00000000deadbeef-42";
                if (what == 3) {
                    gaps[i] = (Events__V1__Gap)EVENTS__V1__GAP__INIT;
                    gaps[i].missed = (uint64_t)rand();
                    e->payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP;
                    e->gap = &gaps[i];
                } else if (what == 2) {
                    e->payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT;
                    e->heartbeat = &hb;
                } else {
                    data[i] = (Events__V1__Data)EVENTS__V1__DATA__INIT;
                    data[i].kind = "trade";
                    data[i].key = "MSFT";
                    data[i].seq = (uint64_t)rand() * 977;
                    data[i].emitted_at_unix_micros = 1732430000000000 + rand();
                    data[i].ingested_at_unix_micros = 1732430000000000 + rand();
                    e->payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA;
                    e->data = &data[i];
                }
                d->payload_case = EVENTS__V1__DELIVERY__PAYLOAD_EVENT;
                d->event = e;
            }
            dp[i] = d;
        }
        Events__V1__SubscribeResponse m = EVENTS__V1__SUBSCRIBE_RESPONSE__INIT;
        m.deliveries = dp;
        m.n_deliveries = nd;
        size_t n = pack(&m, buf, sizeof(buf));
        agree_with_protobuf_c(buf, n);
        free(ds);
        free(dp);
        free(evs);
        free(data);
        free(gaps);
        free(ends);
        free(ids);
    }
}

static void requests_are_written_as_protobuf_c_reads_them(void **state)
{
    Events__V1__WatchRequest wr = EVENTS__V1__WATCH_REQUEST__INIT;
    char *keys[] = {"AAPL", "MSFT"};
    wr.topic = "bench";
    wr.keys = keys;
    wr.n_keys = 2;
    wr.overflow = EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DROP;
    uint8_t req[256], buf[512];
    size_t rn = events__v1__watch_request__pack(&wr, req);
    const uint32_t ids[] = {1, 127, 128, 300000, UINT32_MAX};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        size_t need = subparse_encode_add(NULL, 0, ids[i], req, rn);
        assert_int_equal(subparse_encode_add(buf, sizeof(buf), ids[i], req, rn), need);
        Events__V1__SubscribeRequest *m = events__v1__subscribe_request__unpack(NULL, need, buf);
        assert_non_null(m);
        assert_int_equal(m->op_case, EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD);
        assert_int_equal(m->add->id, ids[i]);
        assert_non_null(m->add->request);
        assert_string_equal(m->add->request->topic, "bench");
        assert_int_equal(m->add->request->n_keys, 2);
        assert_string_equal(m->add->request->keys[1], "MSFT");
        assert_int_equal(m->add->request->overflow, EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DROP);
        /* byte for byte what protobuf-c writes */
        uint8_t want[512];
        assert_int_equal(events__v1__subscribe_request__pack(m, want), need);
        assert_memory_equal(want, buf, need);
        events__v1__subscribe_request__free_unpacked(m, NULL);

        need = subparse_encode_remove(NULL, 0, ids[i]);
        assert_int_equal(subparse_encode_remove(buf, need, ids[i]), need);
        m = events__v1__subscribe_request__unpack(NULL, need, buf);
        assert_non_null(m);
        assert_int_equal(m->op_case, EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE);
        assert_int_equal(m->remove->id, ids[i]);
        assert_int_equal(events__v1__subscribe_request__pack(m, want), need);
        assert_memory_equal(want, buf, need);
        events__v1__subscribe_request__free_unpacked(m, NULL);
    }
    /* too small: the size, nothing written */
    memset(buf, 0xee, sizeof(buf));
    assert_int_equal(subparse_encode_remove(buf, 2, 300), 5);
    assert_int_equal(buf[0], 0xee);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_and_ends_with_their_ids_are_read),
        cmocka_unit_test(empty_response_and_empty_delivery),
        cmocka_unit_test(unpacked_and_split_ids_and_unknown_fields),
        cmocka_unit_test(the_last_payload_wins),
        cmocka_unit_test(malformed_bytes_are_rejected),
        cmocka_unit_test(more_ids_than_room),
        cmocka_unit_test(random_responses_agree),
        cmocka_unit_test(requests_are_written_as_protobuf_c_reads_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
