/*
 * feedcap: capture files (feed/FORMAT.md, "Capture files"): a 24-byte
 * header, then records of (recv_time_us, frame) to the end of the file.
 *
 * A writer and a reader; each is used by one thread.
 */
#ifndef TICKFAN_FEEDCAP_H
#define TICKFAN_FEEDCAP_H

#include <stddef.h>
#include <stdint.h>

#include "feedframe.h"

/* ---- writing ---- */

typedef struct feedcap_writer feedcap_writer_t;

/* Creates (or truncates) `path` and writes the header. Returns 0 or -errno,
 * with a message naming the path in err. */
int feedcap_writer_create(feedcap_writer_t **out, const char *path, int64_t created_us, char *err,
                          size_t errlen);
/* Appends one record; the frame is copied (buffered). Returns 0 or -errno. */
int feedcap_write(feedcap_writer_t *w, int64_t recv_time_us, const uint8_t *frame, size_t len);
/* Writes out what is buffered. Returns 0 or -errno. */
int feedcap_flush(feedcap_writer_t *w);
/* Flushes, syncs and closes; frees w in every case. Returns 0 or the first
 * -errno met (then the file may be incomplete). */
int feedcap_writer_close(feedcap_writer_t *w);

/* ---- reading ---- */

typedef struct feedcap_reader feedcap_reader_t;

struct feedcap_record {
    int64_t recv_time_us;
    const uint8_t *frame; /* points into the reader: valid until the next call */
    size_t len;
    uint64_t offset;             /* of the record in the file */
    enum feedframe_error status; /* FEEDFRAME_OK, or BAD_TOPIC (framed, still returned) */
};

/* Opens `path` and checks its header (magic and version). Returns 0, or
 * -errno / -EINVAL with a message naming the path in err. */
int feedcap_reader_open(feedcap_reader_t **out, const char *path, char *err, size_t errlen);
int64_t feedcap_created_us(const feedcap_reader_t *r);
/*
 * Reads the next record. Returns 1 (a record in *rec), 0 at the end of the
 * file, or a negative value when the file cannot be read on: -EIO (with
 * errno's message in err) or -EBADMSG for a record that cannot be framed
 * (its reason and offset in err; a last record cut short is "truncated").
 */
int feedcap_next(feedcap_reader_t *r, struct feedcap_record *rec, char *err, size_t errlen);
void feedcap_reader_close(feedcap_reader_t *r);

#endif
