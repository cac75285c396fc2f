/*
 * reflection: grpc.reflection.v1 and v1alpha ServerReflectionInfo.
 *
 * The descriptors of every .proto this server serves are compiled in (a
 * FileDescriptorSet made by protoc at build time, embedded as bytes). At the
 * first call they are indexed by walking the protobuf wire format: file
 * names, packages, dependencies and top-level symbols. A call lives on its
 * shard, one response per request, one send in flight.
 */
#include "reflection.h"

#include <grpc/byte_buffer_reader.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "call.h"
#include "log.h"
#include "server.h"
#include "wire.h"

extern const unsigned char tickfan_descriptors[];
extern const size_t tickfan_descriptors_len;

/* ---- the descriptor index ------------------------------------------------ */

#define MAX_FILES 32
#define MAX_SYMBOLS 512

struct span {
    const uint8_t *p;
    size_t n;
};

struct file {
    struct span bytes; /* a serialized FileDescriptorProto */
    struct span name, package;
    struct span deps[16];
    size_t ndeps;
};

struct symbol {
    char name[256]; /* fully qualified */
    size_t file;
};

static struct file files[MAX_FILES];
static size_t nfiles;
static struct symbol symbols[MAX_SYMBOLS];
static size_t nsymbols;
static char services[16][128];
static size_t nservices;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

/* Reads a varint; false at the end or on a malformed one. */
static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Next field of a message: its number and, for length-delimited fields, its
 * bytes (other wire types are skipped). False at the end. */
static bool next_field(const uint8_t **p, const uint8_t *end, uint32_t *num, struct span *val)
{
    while (*p < end) {
        uint64_t key, v;
        if (!varint(p, end, &key))
            return false;
        *num = (uint32_t)(key >> 3);
        switch (key & 7) {
        case 0:
            if (!varint(p, end, &v))
                return false;
            continue;
        case 1:
            *p += 8;
            continue;
        case 5:
            *p += 4;
            continue;
        case 2:
            if (!varint(p, end, &v) || v > (uint64_t)(end - *p))
                return false;
            val->p = *p;
            val->n = (size_t)v;
            *p += v;
            return true;
        default:
            return false;
        }
    }
    return false;
}

/* The `name` (field 1) of a nested descriptor message. */
static struct span name_of(struct span msg)
{
    const uint8_t *p = msg.p, *end = msg.p + msg.n;
    uint32_t num;
    struct span v = {0};
    while (next_field(&p, end, &num, &v))
        if (num == 1)
            return v;
    return (struct span){0};
}

static void add_symbol(size_t file, struct span package, struct span name, struct span member)
{
    if (nsymbols == MAX_SYMBOLS || !name.n)
        return;
    struct symbol *s = &symbols[nsymbols++];
    int n =
        snprintf(s->name, sizeof(s->name), "%.*s%s%.*s", (int)package.n, (const char *)package.p,
                 package.n ? "." : "", (int)name.n, (const char *)name.p);
    if (member.n && n > 0)
        snprintf(s->name + n, sizeof(s->name) - (size_t)n, ".%.*s", (int)member.n,
                 (const char *)member.p);
    s->file = file;
}

static void build_index(void)
{
    const uint8_t *p = tickfan_descriptors, *end = p + tickfan_descriptors_len;
    uint32_t num;
    struct span fd;
    while (nfiles < MAX_FILES && next_field(&p, end, &num, &fd)) {
        if (num != 1)
            continue;
        struct file *f = &files[nfiles];
        f->bytes = fd;
        /* first pass: name, package, dependencies */
        const uint8_t *q = fd.p, *qend = fd.p + fd.n;
        struct span v;
        while (next_field(&q, qend, &num, &v)) {
            if (num == 1)
                f->name = v;
            else if (num == 2)
                f->package = v;
            else if (num == 3 && f->ndeps < 16)
                f->deps[f->ndeps++] = v;
        }
        /* second pass: messages (4), enums (5), services (6) and methods */
        q = fd.p;
        while (next_field(&q, qend, &num, &v)) {
            if (num == 4 || num == 5) {
                add_symbol(nfiles, f->package, name_of(v), (struct span){0});
            } else if (num == 6) {
                struct span svc = name_of(v);
                add_symbol(nfiles, f->package, svc, (struct span){0});
                if (nservices < 16)
                    snprintf(services[nservices++], sizeof(services[0]), "%.*s.%.*s",
                             (int)f->package.n, (const char *)f->package.p, (int)svc.n,
                             (const char *)svc.p);
                const uint8_t *m = v.p, *mend = v.p + v.n;
                struct span mv;
                while (next_field(&m, mend, &num, &mv))
                    if (num == 2)
                        add_symbol(nfiles, f->package, svc, name_of(mv));
            }
        }
        nfiles++;
    }
}

static bool span_is(struct span s, const char *text)
{
    return s.n == strlen(text) && memcmp(s.p, text, s.n) == 0;
}

static ssize_t file_named(const char *name)
{
    for (size_t i = 0; i < nfiles; i++)
        if (span_is(files[i].name, name))
            return (ssize_t)i;
    return -1;
}

static ssize_t file_of_symbol(const char *symbol)
{
    for (size_t i = 0; i < nsymbols; i++)
        if (strcmp(symbols[i].name, symbol) == 0)
            return (ssize_t)symbols[i].file;
    return -1;
}

/* The file and, transitively, what it imports (each once). */
static size_t with_deps(size_t file, size_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (out[i] == file)
            return n;
    out[n++] = file;
    for (size_t d = 0; d < files[file].ndeps; d++)
        for (size_t i = 0; i < nfiles; i++)
            if (files[i].name.n == files[file].deps[d].n &&
                memcmp(files[i].name.p, files[file].deps[d].p, files[i].name.n) == 0 &&
                n < MAX_FILES)
                n = with_deps(i, out, n);
    return n;
}

/* ---- the calls ------------------------------------------------------------ */

struct refl_call {
    struct call base; /* first */
    struct tag t_recv, t_send, t_end;
    bool ended, send_busy;
    grpc_byte_buffer *recv_bb, *send_bb;
    grpc_slice details;
};

static void release(struct call *c)
{
    struct refl_call *rc = (struct refl_call *)c;
    if (rc->recv_bb)
        grpc_byte_buffer_destroy(rc->recv_bb);
    if (rc->ended)
        grpc_slice_unref(rc->details);
    free(rc);
}

static const struct call_ops call_ops = {.release = release};

static void end_call(struct refl_call *rc)
{
    if (rc->ended || rc->base.closed)
        return;
    rc->ended = true;
    rc->details = grpc_empty_slice();
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = GRPC_STATUS_OK;
    op.data.send_status_from_server.status_details = &rc->details;
    call_start_batch(&rc->base, &op, 1, &rc->t_end);
}

static void post_recv(struct refl_call *rc)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &rc->recv_bb;
    call_start_batch(&rc->base, &op, 1, &rc->t_recv);
}

/* The response to one request (v1 and v1alpha share the wire format). */
static grpc_byte_buffer *answer(grpc_byte_buffer *bb)
{
    grpc_slice s;
    if (wire_read_all(bb, &s))
        return NULL;
    Grpc__Reflection__V1__ServerReflectionRequest *req =
        grpc__reflection__v1__server_reflection_request__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                                GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!req)
        return NULL;

    Grpc__Reflection__V1__ServerReflectionResponse resp =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse fdr =
        GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse lsr =
        GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1__ServiceResponse svc[16], *svcp[16];
    ProtobufCBinaryData fds[MAX_FILES];
    char msg[300];
    resp.valid_host = req->host ? req->host : "";
    resp.original_request = req;

    ssize_t file = -1;
    const char *asked = "";
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        for (size_t i = 0; i < nservices; i++) {
            grpc__reflection__v1__service_response__init(&svc[i]);
            svc[i].name = services[i];
            svcp[i] = &svc[i];
        }
        lsr.n_service = nservices;
        lsr.service = svcp;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &lsr;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        asked = req->file_by_filename;
        file = file_named(asked);
        goto file_reply;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        asked = req->file_containing_symbol;
        file = file_of_symbol(asked);
    file_reply:
        if (file >= 0) {
            size_t list[MAX_FILES];
            size_t n = with_deps((size_t)file, list, 0);
            for (size_t i = 0; i < n; i++)
                fds[i] = (ProtobufCBinaryData){.len = files[list[i]].bytes.n,
                                               .data = (uint8_t *)files[list[i]].bytes.p};
            fdr.n_file_descriptor_proto = n;
            fdr.file_descriptor_proto = fds;
            resp.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
            resp.file_descriptor_response = &fdr;
            break;
        }
        snprintf(msg, sizeof(msg), "not found: %.250s", asked);
        er.error_code = GRPC_STATUS_NOT_FOUND;
        er.error_message = msg;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &er;
        break;
    default:
        er.error_code = GRPC_STATUS_UNIMPLEMENTED;
        er.error_message = "this server defines no extensions";
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &er;
    }
    size_t n = grpc__reflection__v1__server_reflection_response__get_packed_size(&resp);
    grpc_slice out = grpc_slice_malloc(n);
    grpc__reflection__v1__server_reflection_response__pack(&resp, GRPC_SLICE_START_PTR(out));
    grpc_byte_buffer *reply = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);
    grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
    return reply;
}

static void on_send(struct shard *sh, void *obj, bool ok)
{
    struct refl_call *rc = obj;
    rc->send_busy = false;
    grpc_byte_buffer_destroy(rc->send_bb);
    rc->send_bb = NULL;
    if (ok && !rc->base.closed)
        post_recv(rc);
    call_unref(&rc->base);
}

static void on_recv(struct shard *sh, void *obj, bool ok)
{
    struct refl_call *rc = obj;
    grpc_byte_buffer *bb = rc->recv_bb;
    rc->recv_bb = NULL;
    if (!ok || !bb) {
        end_call(rc); /* the client is done */
    } else {
        rc->send_bb = answer(bb);
        grpc_byte_buffer_destroy(bb);
        if (!rc->send_bb) {
            grpc_call_cancel_with_status(rc->base.call, GRPC_STATUS_INVALID_ARGUMENT,
                                         "malformed ServerReflectionRequest", NULL);
        } else {
            grpc_op op;
            memset(&op, 0, sizeof(op));
            op.op = GRPC_OP_SEND_MESSAGE;
            op.data.send_message.send_message = rc->send_bb;
            rc->send_busy = true;
            if (call_start_batch(&rc->base, &op, 1, &rc->t_send) != GRPC_CALL_OK) {
                rc->send_busy = false;
                grpc_byte_buffer_destroy(rc->send_bb);
                rc->send_bb = NULL;
            }
        }
    }
    call_unref(&rc->base);
}

static void on_end(struct shard *sh, void *obj, bool ok)
{
    call_unref(&((struct refl_call *)obj)->base);
}

static void accept_reflection(struct shard *sh, void *st, grpc_call *call,
                              grpc_byte_buffer *payload)
{
    (void)st;
    pthread_once(&index_once, build_index);
    if (payload)
        grpc_byte_buffer_destroy(payload);
    struct refl_call *rc = calloc(1, sizeof(*rc));
    if (!rc) {
        shard_refuse(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rc->t_recv = (struct tag){.fn = on_recv, .obj = rc};
    rc->t_send = (struct tag){.fn = on_send, .obj = rc};
    rc->t_end = (struct tag){.fn = on_end, .obj = rc};
    call_open(&rc->base, sh, call, &call_ops, NULL, false);
    if (call_start_recv_close(&rc->base, true))
        post_recv(rc);
    call_unref(&rc->base); /* the opener's: releases a call gRPC refused */
}

static const struct service_method methods[] = {
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false, accept_reflection, 0,
     false},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", false, accept_reflection, 0,
     false},
};

const struct service reflection_service = {
    .name = "reflection",
    .methods = methods,
    .nmethods = sizeof(methods) / sizeof(methods[0]),
};

size_t reflection_services(const char **out, size_t max)
{
    pthread_once(&index_once, build_index);
    size_t n = nservices < max ? nservices : max;
    for (size_t i = 0; i < n; i++)
        out[i] = services[i];
    return n;
}
