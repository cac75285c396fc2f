/*
 * evparse: reads the few fields of an events.v1.WatchEvent that the load
 * generator checks, straight from the protobuf wire bytes: no allocation, no
 * copy, unknown fields skipped. Pure function; any thread.
 *
 * Field numbers are those of proto/events/v1/watcher.proto: WatchEvent
 * {data=1, heartbeat=2, end_of_backlog=3, gap=4, cursor=10}, Data {seq=5,
 * ingested_at_unix_micros=6, snapshot=7, emitted_at_unix_micros=3},
 * Gap {missed=1, reason=2}.
 */
#ifndef TICKFAN_EVPARSE_H
#define TICKFAN_EVPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum evparse_kind {
    EVPARSE_NONE = 0, /* no payload set (or one this version does not know) */
    EVPARSE_DATA,
    EVPARSE_HEARTBEAT,
    EVPARSE_END_OF_BACKLOG,
    EVPARSE_GAP,
};

struct evparse_event {
    enum evparse_kind kind;
    /* EVPARSE_DATA */
    uint64_t seq;
    int64_t ingested_us;
    int64_t emitted_us;
    bool snapshot;
    /* EVPARSE_GAP */
    uint64_t gap_missed;
    uint32_t gap_reason;
    /* Points into the parsed bytes: valid as long as they are. */
    const uint8_t *cursor;
    size_t cursor_len;
};

/*
 * Parses the n bytes at p as one WatchEvent into *ev (fully overwritten).
 * As in protobuf, the last payload field present wins. Returns 0, or
 * -EBADMSG for bytes that are not well-formed protobuf (truncated varint or
 * field, wire type 3/4/6/7, field number 0).
 */
int evparse_watch_event(const uint8_t *p, size_t n, struct evparse_event *ev);

#endif
