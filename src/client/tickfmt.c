/*
 * tickfmt: WatchEvents as human lines and JSON lines. Pure functions, any
 * thread; see tickfmt.h for both output formats.
 */
#include "tickfmt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "market/v1/tick.pb-c.h"

/* Bytes of a non-tick body shown as hex on a human line. */
#define HEX_PREVIEW 16

static int finish(FILE *out)
{
    return ferror(out) ? -EIO : 0;
}

size_t tickfmt_price(char *buf, int64_t mantissa, int32_t exponent)
{
    bool neg = mantissa < 0;
    /* Through uint64_t so INT64_MIN has a magnitude too. */
    uint64_t mag = neg ? (uint64_t)0 - (uint64_t)mantissa : (uint64_t)mantissa;
    char digits[24];
    int nd = snprintf(digits, sizeof(digits), "%" PRIu64, mag);
    char *p = buf;

    if (exponent > TICKFMT_PRICE_EXP_LIMIT || exponent < -TICKFMT_PRICE_EXP_LIMIT)
        return (size_t)snprintf(buf, TICKFMT_PRICE_MAX, "%" PRId64 "e%" PRId32, mantissa, exponent);
    if (neg)
        *p++ = '-';
    if (exponent >= 0) {
        memcpy(p, digits, (size_t)nd);
        p += nd;
        if (mag != 0) {
            memset(p, '0', (size_t)exponent);
            p += exponent;
        }
    } else {
        int decimals = -exponent;
        int int_digits = nd - decimals;
        if (int_digits <= 0) {
            *p++ = '0';
            *p++ = '.';
            memset(p, '0', (size_t)-int_digits);
            p += -int_digits;
            memcpy(p, digits, (size_t)nd);
            p += nd;
        } else {
            memcpy(p, digits, (size_t)int_digits);
            p += int_digits;
            *p++ = '.';
            memcpy(p, digits + int_digits, (size_t)decimals);
            p += decimals;
        }
    }
    *p = '\0';
    return (size_t)(p - buf);
}

size_t tickfmt_time_micros(char *buf, int64_t unix_micros)
{
    /* Floor division, so times before 1970 still get 0..999999 micros. */
    int64_t secs = unix_micros / 1000000;
    int64_t micros = unix_micros % 1000000;
    if (micros < 0) {
        micros += 1000000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return (size_t)snprintf(buf, TICKFMT_TIME_MAX, "@%" PRId64 "us", unix_micros);
    char date[40];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    return (size_t)snprintf(buf, TICKFMT_TIME_MAX, "%s.%06" PRId64 "Z", date, micros);
}

/*
 * Length of the well-formed UTF-8 sequence of more than one byte starting at
 * s (at most n bytes available), or 0 if there is none: overlong forms,
 * surrogates and code points above U+10FFFF are not well formed.
 */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

int tickfmt_json_string(FILE *out, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    fputc('"', out);
    while (i < len) {
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t n = utf8_seq_len(u + i, len - i);
            if (n == 0) {
                fputs("\\ufffd", out);
                i++;
            } else {
                fwrite(u + i, 1, n, out);
                i += n;
            }
            continue;
        }
        switch (c) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        case '\b':
            fputs("\\b", out);
            break;
        case '\f':
            fputs("\\f", out);
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                fprintf(out, "\\u%04x", c);
            else
                fputc(c, out);
        }
        i++;
    }
    fputc('"', out);
    return finish(out);
}

static void json_str(FILE *out, const char *s)
{
    tickfmt_json_string(out, s ? s : "", s ? strlen(s) : 0);
}

int tickfmt_safe_string(FILE *out, const char *s)
{
    const unsigned char *u = (const unsigned char *)(s ? s : "");
    size_t len = strlen((const char *)u);
    size_t i = 0;

    while (i < len) {
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t n = utf8_seq_len(u + i, len - i);
            if (n == 0) {
                fprintf(out, "\\x%02x", c);
                i++;
            } else {
                fwrite(u + i, 1, n, out);
                i += n;
            }
        } else if (c < 0x20 || c == 0x7f || c == '\\') {
            fprintf(out, "\\x%02x", c);
            i++;
        } else {
            fputc(c, out);
            i++;
        }
    }
    return finish(out);
}

static void human_str(FILE *out, const char *s)
{
    tickfmt_safe_string(out, s);
}

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(FILE *out, const uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        fputc(base64_alphabet[v >> 18 & 63], out);
        fputc(base64_alphabet[v >> 12 & 63], out);
        fputc(base64_alphabet[v >> 6 & 63], out);
        fputc(base64_alphabet[v & 63], out);
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        fputc(base64_alphabet[v >> 18 & 63], out);
        fputc(base64_alphabet[v >> 12 & 63], out);
        fputs("==", out);
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        fputc(base64_alphabet[v >> 18 & 63], out);
        fputc(base64_alphabet[v >> 12 & 63], out);
        fputc(base64_alphabet[v >> 6 & 63], out);
        fputc('=', out);
    }
}

/* NULL, or the decoded tick of a quote/trade Data event (free with tick_free). */
static Tickfan__Market__V1__Tick *tick_decode(const Events__V1__Data *d)
{
    if (d->kind == NULL || (strcmp(d->kind, "quote") != 0 && strcmp(d->kind, "trade") != 0))
        return NULL;
    Tickfan__Market__V1__Tick *t =
        tickfan__market__v1__tick__unpack(NULL, d->body.len, d->body.data);
    if (t == NULL)
        return NULL;
    if ((t->body_case == TICKFAN__MARKET__V1__TICK__BODY_QUOTE && t->quote != NULL) ||
        (t->body_case == TICKFAN__MARKET__V1__TICK__BODY_TRADE && t->trade != NULL))
        return t;
    tickfan__market__v1__tick__free_unpacked(t, NULL);
    return NULL;
}

static void tick_free(Tickfan__Market__V1__Tick *t)
{
    if (t != NULL)
        tickfan__market__v1__tick__free_unpacked(t, NULL);
}

static const char *side_word(Tickfan__Market__V1__Side side)
{
    switch (side) {
    case TICKFAN__MARKET__V1__SIDE__SIDE_BUY:
        return "BUY";
    case TICKFAN__MARKET__V1__SIDE__SIDE_SELL:
        return "SELL";
    default:
        return NULL;
    }
}

/* The enum value's proto name, or NULL for a value this build does not know. */
static const char *enum_name(const ProtobufCEnumDescriptor *desc, int value)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(desc, value);
    return v ? v->name : NULL;
}

static void json_enum(FILE *out, const ProtobufCEnumDescriptor *desc, int value)
{
    const char *name = enum_name(desc, value);
    if (name)
        json_str(out, name);
    else
        fprintf(out, "%d", value);
}

static void human_data(FILE *out, const Events__V1__Data *d)
{
    char when[TICKFMT_TIME_MAX];
    char p1[TICKFMT_PRICE_MAX], p2[TICKFMT_PRICE_MAX];
    Tickfan__Market__V1__Tick *t = tick_decode(d);

    tickfmt_time_micros(when, d->emitted_at_unix_micros);
    fprintf(out, "%s ", when);
    human_str(out, d->kind);
    fputc(' ', out);
    /* Pad short symbols so the columns of a busy screen line up. */
    size_t keylen = d->key ? strlen(d->key) : 0;
    human_str(out, d->key);
    fprintf(out, "%*s", keylen < 4 ? (int)(6 - keylen) : 2, "");

    if (t != NULL && t->body_case == TICKFAN__MARKET__V1__TICK__BODY_QUOTE) {
        const Tickfan__Market__V1__Quote *q = t->quote;
        tickfmt_price(p1, q->bid_price, t->price_exponent);
        tickfmt_price(p2, q->ask_price, t->price_exponent);
        fprintf(out, "bid %s x %" PRId64 "  ask %s x %" PRId64, p1, q->bid_size, p2, q->ask_size);
    } else if (t != NULL) {
        const Tickfan__Market__V1__Trade *tr = t->trade;
        const char *side = side_word(tr->aggressor_side);
        tickfmt_price(p1, tr->price, t->price_exponent);
        fprintf(out, "%s x %" PRId64 "%s%s", p1, tr->size, side ? " " : "", side ? side : "");
    } else {
        size_t n = d->body.len < HEX_PREVIEW ? d->body.len : HEX_PREVIEW;
        fprintf(out, "%zu bytes", d->body.len);
        if (n > 0)
            fputc(' ', out);
        for (size_t i = 0; i < n; i++)
            fprintf(out, "%02x", d->body.data[i]);
        if (d->body.len > n)
            fputs("...", out);
    }
    fprintf(out, "  %sseq=%" PRIu64 " ", d->snapshot ? "snapshot " : "", d->seq);
    tick_free(t);
}

int tickfmt_human(FILE *out, const Events__V1__WatchEvent *ev)
{
    return tickfmt_human_topic(out, NULL, ev);
}

int tickfmt_human_topic(FILE *out, const char *topic, const Events__V1__WatchEvent *ev)
{
    char when[TICKFMT_TIME_MAX];

    switch (ev->payload_case) {
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA:
        human_data(out, ev->data);
        break;
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT:
        tickfmt_time_micros(when, ev->heartbeat->server_unix_micros);
        fprintf(out, "%s heartbeat ", when);
        break;
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_END_OF_BACKLOG:
        fputs("end-of-backlog (caught up, live from here) ", out);
        break;
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP: {
        const Events__V1__Gap *g = ev->gap;
        const char *reason = enum_name(&events__v1__gap_reason__descriptor, (int)g->reason);
        fprintf(out, "gap: missed %" PRIu64 " event%s, reason ", g->missed,
                g->missed == 1 ? "" : "s");
        if (reason)
            fputs(reason, out);
        else
            fprintf(out, "%d", (int)g->reason);
        fputs(", from_cursor=", out);
        human_str(out, g->from_cursor);
        fputc(' ', out);
        break;
    }
    default:
        fputs("unknown event (newer server than this client) ", out);
        break;
    }
    if (topic != NULL) {
        fputs("topic=", out);
        human_str(out, topic);
        fputc(' ', out);
    }
    fputs("cursor=", out);
    human_str(out, ev->cursor);
    fputc('\n', out);
    return finish(out);
}

static void json_data(FILE *out, const Events__V1__Data *d)
{
    char p1[TICKFMT_PRICE_MAX], p2[TICKFMT_PRICE_MAX];
    Tickfan__Market__V1__Tick *t = tick_decode(d);

    fprintf(out, ",\"seq\":%" PRIu64 ",\"kind\":", d->seq);
    json_str(out, d->kind);
    fputs(",\"key\":", out);
    json_str(out, d->key);
    fprintf(out,
            ",\"emitted_at_unix_micros\":%" PRId64 ",\"ingested_at_unix_micros\":%" PRId64
            ",\"snapshot\":%s",
            d->emitted_at_unix_micros, d->ingested_at_unix_micros, d->snapshot ? "true" : "false");

    if (t != NULL && t->body_case == TICKFAN__MARKET__V1__TICK__BODY_QUOTE) {
        const Tickfan__Market__V1__Quote *q = t->quote;
        tickfmt_price(p1, q->bid_price, t->price_exponent);
        tickfmt_price(p2, q->ask_price, t->price_exponent);
        fprintf(out,
                ",\"quote\":{\"bid\":\"%s\",\"bid_size\":%" PRId64 ",\"ask\":\"%s\","
                "\"ask_size\":%" PRId64 "}",
                p1, q->bid_size, p2, q->ask_size);
    } else if (t != NULL) {
        const Tickfan__Market__V1__Trade *tr = t->trade;
        tickfmt_price(p1, tr->price, t->price_exponent);
        fprintf(out, ",\"trade\":{\"price\":\"%s\",\"size\":%" PRId64 ",\"side\":", p1, tr->size);
        json_enum(out, &tickfan__market__v1__side__descriptor, (int)tr->aggressor_side);
        fputc('}', out);
    }
    if (t != NULL) {
        fprintf(out, ",\"exchange_time_unix_nanos\":%" PRId64 ",\"venue\":",
                t->exchange_time_unix_nanos);
        json_str(out, t->venue);
    } else {
        fputs(",\"body_base64\":\"", out);
        base64(out, d->body.data, d->body.len);
        fputc('"', out);
    }
    tick_free(t);
}

int tickfmt_json(FILE *out, const Events__V1__WatchEvent *ev)
{
    return tickfmt_json_topic(out, NULL, ev);
}

int tickfmt_json_topic(FILE *out, const char *topic, const Events__V1__WatchEvent *ev)
{
    static const char *const types[] = {
        [EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA] = "data",
        [EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT] = "heartbeat",
        [EVENTS__V1__WATCH_EVENT__PAYLOAD_END_OF_BACKLOG] = "end_of_backlog",
        [EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP] = "gap",
    };
    size_t pc = (size_t)ev->payload_case;
    const char *type = pc < sizeof(types) / sizeof(types[0]) && types[pc] ? types[pc] : "unknown";

    fprintf(out, "{\"type\":\"%s\",", type);
    if (topic != NULL) {
        fputs("\"topic\":", out);
        json_str(out, topic);
        fputc(',', out);
    }
    fputs("\"cursor\":", out);
    json_str(out, ev->cursor);
    switch (ev->payload_case) {
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA:
        json_data(out, ev->data);
        break;
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT:
        fprintf(out, ",\"server_unix_micros\":%" PRId64, ev->heartbeat->server_unix_micros);
        break;
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP:
        fprintf(out, ",\"missed\":%" PRIu64 ",\"reason\":", ev->gap->missed);
        json_enum(out, &events__v1__gap_reason__descriptor, (int)ev->gap->reason);
        fputs(",\"from_cursor\":", out);
        json_str(out, ev->gap->from_cursor);
        break;
    default:
        break;
    }
    fputs("}\n", out);
    return finish(out);
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool take_digits(const char **p, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int tickfmt_parse_time(const char *text, int64_t *unix_us)
{
    const char *p = text;
    bool all_digits = *p != '\0';
    for (const char *q = p; *q; q++)
        all_digits &= *q >= '0' && *q <= '9';
    if (all_digits) {
        if (strlen(p) > 18)
            return -EINVAL;
        int64_t v = 0;
        for (; *p; p++)
            v = v * 10 + (*p - '0');
        *unix_us = v;
        return 0;
    }
    int64_t y, mo, d, h, mi, s, frac = 0;
    if (!take_digits(&p, 4, &y) || *p++ != '-' || !take_digits(&p, 2, &mo) || *p++ != '-' ||
        !take_digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return -EINVAL;
    p++;
    if (!take_digits(&p, 2, &h) || *p++ != ':' || !take_digits(&p, 2, &mi) || *p++ != ':' ||
        !take_digits(&p, 2, &s))
        return -EINVAL;
    if (*p == '.') {
        p++;
        int n = 0;
        while (p[n] >= '0' && p[n] <= '9')
            n++;
        if (n == 0 || n > 6)
            return -EINVAL;
        take_digits(&p, n, &frac);
        for (int i = n; i < 6; i++)
            frac *= 10;
    }
    if ((*p != 'Z' && *p != 'z') || p[1] != '\0')
        return -EINVAL;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || s > 60)
        return -EINVAL;
    *unix_us = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000000 + s * 1000000 + frac;
    return 0;
}
