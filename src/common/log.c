/*
 * log: levelled, logfmt-style logging to stderr. Any thread.
 */
#include "log.h"


#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic int log_current_level = LOG_INFO;
static bool json_output;

void log_set_json(bool json)
{
    json_output = json;
}

/* Appends s[0..n) to out as the body of a JSON string. */
static size_t json_escape(char *out, size_t room, const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w + 7 < room; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[w++] = '\\';
            out[w++] = (char)ch;
        } else if (ch < 0x20) {
            w += (size_t)snprintf(out + w, room - w, "\\u%04x", ch);
        } else {
            out[w++] = (char)ch;
        }
    }
    return w;
}

/* Rewrites a logfmt line (key=value, value quoted with \" escapes when it
 * has spaces) as a JSON object; integers stay numbers. */
static size_t logfmt_to_json(const char *in, size_t len, char *out, size_t room)
{
    size_t w = 0, i = 0;
    out[w++] = '{';
    bool first = true;
    while (i < len && w + 16 < room) {
        while (i < len && in[i] == ' ')
            i++;
        size_t k0 = i;
        while (i < len && in[i] != '=' && in[i] != ' ')
            i++;
        if (i >= len || in[i] != '=')
            break;
        size_t k1 = i++;
        char val[1024];
        size_t vn = 0;
        bool quoted = i < len && in[i] == '"';
        if (quoted) {
            i++;
            while (i < len && in[i] != '"' && vn < sizeof(val)) {
                if (in[i] == '\\' && i + 1 < len)
                    i++;
                val[vn++] = in[i++];
            }
            i++;
        } else {
            while (i < len && in[i] != ' ' && vn < sizeof(val))
                val[vn++] = in[i++];
        }
        bool number = !quoted && vn > 0 && vn < 19;
        for (size_t j = 0; j < vn && number; j++)
            number = (val[j] >= '0' && val[j] <= '9') || (j == 0 && val[j] == '-' && vn > 1);
        if (!first)
            out[w++] = ',';
        first = false;
        out[w++] = '"';
        w += json_escape(out + w, room - w, in + k0, k1 - k0);
        out[w++] = '"';
        out[w++] = ':';
        if (number) {
            memcpy(out + w, val, vn);
            w += vn;
        } else {
            out[w++] = '"';
            w += json_escape(out + w, room - w, val, vn);
            out[w++] = '"';
        }
    }
    out[w++] = '}';
    return w;
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_parse_level(const char *s, enum log_level *out)
{
    for (int i = 0; i <= LOG_DEBUG; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_current_level, level, memory_order_relaxed);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ level=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    if (json_output) {
        char json[4096];
        size_t jn = logfmt_to_json(line, len, json, sizeof(json) - 1);
        json[jn++] = '\n';
        ssize_t w = write(STDERR_FILENO, json, jn);
        (void)w;
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

bool log_ratelimit_allow(struct log_ratelimit *rl, int64_t now_us, uint64_t *suppressed)
{
    if (now_us - rl->window_start_us >= rl->interval_us) {
        rl->window_start_us = now_us;
        rl->used = 0;
    }
    if (rl->used < rl->burst) {
        rl->used++;
        *suppressed = rl->suppressed;
        rl->suppressed = 0;
        return true;
    }
    rl->suppressed++;
    return false;
}
