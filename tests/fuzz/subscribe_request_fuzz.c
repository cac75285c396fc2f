/*
 * subscribe_request_fuzz: what the server makes of any bytes a client sends
 * as a SubscribeRequest message.
 *
 * Each input goes through wire_read_subscribe(), the decoder the Subscribe
 * stream uses, and then through what an add does with a decoded request
 * before a subscription exists: the cursor parser and the filter. Checked:
 * a refused message is refused with a message the client can read; an
 * accepted one holds only strings that are valid UTF-8 without NUL (so no
 * name is cut short downstream), packs again, and unpacks to the same
 * operation and id.
 *
 * Built with -DSUBSCRIBE_FUZZ_MAKE_SEEDS instead, it writes a seed corpus
 * (main(dir)): adds with every field, removes, and damaged variants.
 */
#include <grpc/grpc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cursor.h"
#include "filter.h"
#include "text.h"
#include "wire.h"

static void die(const char *what)
{
    fprintf(stderr, "subscribe_request_fuzz: %s\n", what);
    abort();
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            die("check failed: " #cond);                                                           \
    } while (0)

static void check_text(const char *s)
{
    CHECK(s);
    CHECK(text_valid(s, strlen(s)));
}

static void check_request(const Events__V1__WatchRequest *r)
{
    check_text(r->topic);
    check_text(r->cursor);
    for (size_t i = 0; i < r->n_kinds; i++)
        check_text(r->kinds[i]);
    for (size_t i = 0; i < r->n_keys; i++)
        check_text(r->keys[i]);
    struct cursor c;
    (void)cursor_parse(r->cursor, strlen(r->cursor), &c);
    struct filter f;
    const char *why = NULL;
    if (filter_init(&f, r->kinds, r->n_kinds, r->keys, r->n_keys, &why) == 0)
        filter_free(&f);
}

static void one(const uint8_t *data, size_t size)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, size);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    Events__V1__SubscribeRequest *req = NULL;
    char why[300] = "";
    int rc = wire_read_subscribe(bb, &req, why, sizeof(why));
    grpc_byte_buffer_destroy(bb);
    if (rc) {
        CHECK(!req);
        CHECK(!strncmp(why, "malformed SubscribeRequest", 26) ||
              !strncmp(why, "invalid SubscribeRequest: ", 26));
        return;
    }
    CHECK(req);
    uint32_t id = 0;
    if (req->op_case == EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD) {
        CHECK(req->add);
        id = req->add->id;
        if (req->add->request)
            check_request(req->add->request);
    } else if (req->op_case == EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE) {
        CHECK(req->remove);
        id = req->remove->id;
    }
    /* protobuf-c keeps unknown fields as they came, and may pack some of
     * them (a stray end-group) into bytes it will not unpack again; the
     * server never packs a request, so the round trip is checked on known
     * fields only */
    bool unknown = req->base.n_unknown_fields ||
                   (req->op_case == EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD &&
                    (req->add->base.n_unknown_fields ||
                     (req->add->request && req->add->request->base.n_unknown_fields))) ||
                   (req->op_case == EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE &&
                    req->remove->base.n_unknown_fields);
    if (unknown) {
        events__v1__subscribe_request__free_unpacked(req, NULL);
        return;
    }
    size_t n = events__v1__subscribe_request__get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    CHECK(buf);
    CHECK(events__v1__subscribe_request__pack(req, buf) == n);
    Events__V1__SubscribeRequest *again = events__v1__subscribe_request__unpack(NULL, n, buf);
    CHECK(again);
    CHECK(again->op_case == req->op_case);
    if (again->op_case == EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD)
        CHECK(again->add->id == id);
    if (again->op_case == EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE)
        CHECK(again->remove->id == id);
    events__v1__subscribe_request__free_unpacked(again, NULL);
    free(buf);
    events__v1__subscribe_request__free_unpacked(req, NULL);
}

#ifndef SUBSCRIBE_FUZZ_MAKE_SEEDS

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    grpc_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size);
    return 0;
}

#else

static const char *seed_dir;
static int nseeds;

static void write_seed(const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/seed-%03d", seed_dir, nseeds++);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f))
        die("cannot write a seed");
    one(p, n); /* every seed passes the checks itself */
}

/* Writes req, then copies with one byte replaced by each of `bad`. */
static void seeds_of(const Events__V1__SubscribeRequest *req)
{
    size_t n = events__v1__subscribe_request__get_packed_size(req);
    uint8_t *buf = malloc(n);
    if (!buf)
        die("out of memory");
    events__v1__subscribe_request__pack(req, buf);
    write_seed(buf, n);
    static const uint8_t bad[] = {0x00, 0xc0, 0xff, 0x80};
    for (size_t b = 0; b < sizeof(bad); b++) {
        uint8_t *copy = malloc(n);
        memcpy(copy, buf, n);
        copy[n - 1] = bad[b];
        write_seed(copy, n);
        free(copy);
    }
    write_seed(buf, n / 2); /* cut short */
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        die("usage: subscribe_request_seeds DIR");
    seed_dir = argv[1];
    mkdir(seed_dir, 0755);
    grpc_init();
    char *kinds[] = {"quote", "trade"}, *keys[] = {"AAPL", "MSFT", "EURUSD"};
    Events__V1__WatchRequest wr = EVENTS__V1__WATCH_REQUEST__INIT;
    wr.topic = "sim";
    wr.cursor = "1-2a";
    wr.n_kinds = 2;
    wr.kinds = kinds;
    wr.n_keys = 3;
    wr.keys = keys;
    wr.start = EVENTS__V1__START_POSITION__START_AT_TIME;
    wr.start_unix_micros = 1795502100000000LL;
    wr.snapshot = true;
    wr.overflow = EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_CONFLATE;
    wr.allow_gap = true;
    Events__V1__SubscriptionAdd add = EVENTS__V1__SUBSCRIPTION_ADD__INIT;
    add.id = 7;
    add.request = &wr;
    Events__V1__SubscribeRequest req = EVENTS__V1__SUBSCRIBE_REQUEST__INIT;
    req.op_case = EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD;
    req.add = &add;
    seeds_of(&req);
    add.id = 4000000000u;
    wr.cursor = "";
    wr.n_kinds = 0;
    seeds_of(&req);
    Events__V1__SubscriptionRemove rm = EVENTS__V1__SUBSCRIPTION_REMOVE__INIT;
    rm.id = 7;
    req.op_case = EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE;
    req.remove = &rm;
    seeds_of(&req);
    write_seed((const uint8_t *)"", 0);
    grpc_shutdown();
    return 0;
}

#endif
