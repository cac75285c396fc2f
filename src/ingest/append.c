/*
 * append: the single writer's appends to a topic log. A Data event is
 * encoded once, straight into its slot of the log; a Gap event of an
 * upstream loss names what was missed. Ingest thread only.
 */
#include "feed_thread.h"

#include <errno.h>
#include <string.h>

int ingest_append(struct topic *t, struct wire_data *d)
{
    ringlog_t *log = t->log;
    struct cursor c = {.epoch = ringlog_epoch(log), .seq = ringlog_head_seq(log) + 1};
    d->seq = c.seq;
    struct wire_data_msg m; /* built once: sized, then packed straight into the log */
    size_t n = wire_data_msg_init(&m, d, c);
    struct ringlog_slot slot;
    int rc = ringlog_reserve(log, RINGLOG_DATA, d->rec.kind_len, d->rec.key_len, n, d->ingested_us,
                             &slot);
    if (rc)
        return rc;
    memcpy(slot.kind, d->rec.kind, d->rec.kind_len);
    memcpy(slot.key, d->rec.key, d->rec.key_len);
    wire_data_msg_pack(&m, slot.event);
    return ringlog_commit(log, &slot);
}

int ingest_append_gap(struct topic *t, uint64_t missed, int64_t now_us)
{
    ringlog_t *log = t->log;
    struct cursor at = {.epoch = ringlog_epoch(log), .seq = ringlog_head_seq(log) + 1};
    struct cursor from = {.epoch = at.epoch, .seq = at.seq - 1};
    uint8_t buf[256];
    size_t n = wire_gap_pack(at, missed, EVENTS__V1__GAP_REASON__GAP_UPSTREAM_LOSS, from, buf,
                             sizeof(buf));
    if (!n)
        return -EMSGSIZE;
    struct ringlog_slot slot;
    int rc = ringlog_reserve(log, RINGLOG_GAP, 0, 0, n, now_us, &slot);
    if (rc)
        return rc;
    memcpy(slot.event, buf, n);
    return ringlog_commit(log, &slot);
}
