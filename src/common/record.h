/*
 * record: the {kind, key, body} view of one record, as the feed frames it,
 * Publish carries it and the log encodes it. A view: it points into memory
 * it does not own; kind and key need not be NUL-terminated.
 */
#ifndef TICKFAN_RECORD_H
#define TICKFAN_RECORD_H

#include <stddef.h>
#include <stdint.h>

struct record {
    const char *kind;
    size_t kind_len;
    const char *key;
    size_t key_len;
    const uint8_t *body;
    size_t body_len;
};

#endif
