/*
 * log: levelled, logfmt-style logging to stderr.
 *
 * Any thread. The level is checked before anything is formatted, so a
 * disabled log_debug() costs one load. One line per call, written with a
 * single write(2) so lines from different threads never interleave.
 */
#ifndef TICKFAN_LOG_H
#define TICKFAN_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Set by the main thread (start, SIGHUP), read by every thread. */
extern _Atomic int log_current_level;

/* Output format: logfmt (default) or one JSON object per line. */
void log_set_json(bool json);

/* Parses "error", "warn", "info", "debug". Returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
void log_set_level(enum log_level level);

/* Prints `level=... ts=... msg=<fmt...>` plus a newline. */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_at(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= atomic_load_explicit(&log_current_level, memory_order_relaxed))               \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)

/*
 * Rate limit for repeated warnings: at most `burst` lines per `interval_us`.
 * log_ratelimit_allow() returns true when a line may be written and counts
 * the suppressed ones, reported by the next allowed call through
 * *suppressed. Owned by one thread (no locking).
 */
struct log_ratelimit {
    int64_t interval_us;
    int burst;
    int64_t window_start_us;
    int used;
    uint64_t suppressed;
};
bool log_ratelimit_allow(struct log_ratelimit *rl, int64_t now_us, uint64_t *suppressed);

#endif
