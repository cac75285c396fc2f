/*
 * cursor: text form of (epoch, seq). Pure functions, any thread.
 */
#include "cursor.h"

#include <errno.h>
#include <stdio.h>

/* By hand: the ingest thread formats one per appended event, and snprintf
 * was a sixth of its time. */
size_t cursor_format(struct cursor c, char *buf)
{
    static const char hex[] = "0123456789abcdef";
    buf[0] = '1';
    buf[1] = '-';
    for (int i = 0; i < 16; i++)
        buf[2 + i] = hex[(c.epoch >> (60 - 4 * i)) & 0xf];
    buf[18] = '-';
    char digits[20];
    int n = 0;
    uint64_t seq = c.seq;
    do {
        digits[n++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    for (int i = 0; i < n; i++)
        buf[19 + i] = digits[n - 1 - i];
    buf[19 + n] = 0;
    return (size_t)(19 + n);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

int cursor_parse(const char *text, size_t len, struct cursor *out)
{
    /* "1-" + 16 hex + "-" + 1..20 digits */
    if (len < 2 + 16 + 1 + 1 || len > 2 + 16 + 1 + 20)
        return -EINVAL;
    if (text[0] != '1' || text[1] != '-' || text[18] != '-')
        return -EINVAL;
    uint64_t epoch = 0;
    for (size_t i = 2; i < 18; i++) {
        int v = hexval(text[i]);
        if (v < 0)
            return -EINVAL;
        epoch = epoch << 4 | (uint64_t)v;
    }
    uint64_t seq = 0;
    size_t digits = len - 19;
    if (digits > 1 && text[19] == '0')
        return -EINVAL; /* one canonical form per cursor */
    for (size_t i = 19; i < len; i++) {
        char ch = text[i];
        if (ch < '0' || ch > '9')
            return -EINVAL;
        uint64_t d = (uint64_t)(ch - '0');
        if (seq > (UINT64_MAX - d) / 10)
            return -EINVAL;
        seq = seq * 10 + d;
    }
    out->epoch = epoch;
    out->seq = seq;
    return 0;
}
