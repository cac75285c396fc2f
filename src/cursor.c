/*
 * cursor: text form of (epoch, seq). Pure functions, any thread.
 */
#include "cursor.h"

#include <errno.h>
#include <stdio.h>

size_t cursor_format(struct cursor c, char *buf)
{
    int n = snprintf(buf, CURSOR_TEXT_MAX, "1-%016llx-%llu", (unsigned long long)c.epoch,
                     (unsigned long long)c.seq);
    return (size_t)n;
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
