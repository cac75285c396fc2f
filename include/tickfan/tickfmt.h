/*
 * tickfmt: WatchEvents as text, for people (one line per event) and for
 * scripts (one JSON object per line).
 *
 * Pure functions apart from the FILE * they write to; any thread, no shared
 * state. Nothing here is on the server's hot path. The caller keeps
 * ownership of every event and stream passed in.
 *
 * Data bodies of kind "quote" and "trade" are decoded as
 * tickfan.market.v1.Tick; any other body, or one that does not decode as a
 * quote or trade, is shown as bytes. Prices are fixed point (value =
 * mantissa * 10^price_exponent) and are printed exactly, with
 * -price_exponent decimals, never through floating point.
 *
 * Human line (fields separated by spaces, ends with '\n'):
 *   2026-11-24T10:00:01.123456Z quote AAPL  bid 189.1200 x 300  ask 189.1300 x 200  seq=12 cursor=C
 *   2026-11-24T10:00:01.123456Z trade MSFT  512.3400 x 100 BUY  seq=13 cursor=C
 *   2026-11-24T10:00:01.123456Z news ACME  5 bytes 68656c6c6f  seq=14 cursor=C
 *   2026-11-24T10:00:06.000000Z heartbeat cursor=C
 *   end-of-backlog (caught up, live from here) cursor=C
 *   gap: missed 42 events, reason GAP_SLOW_CONSUMER, from_cursor=B cursor=C
 * The time of a Data line is emitted_at (UTC); of a heartbeat, the server's
 * clock. A Data event sent as part of a snapshot or conflation carries the
 * word "snapshot" before seq=. Control characters and invalid UTF-8 in
 * server-supplied strings are shown as \xNN.
 *
 * JSON line schema (one object per line, keys in this order, strings
 * escaped per RFC 8259, invalid UTF-8 replaced by U+FFFD, 64-bit integers as
 * JSON numbers, prices as decimal strings so no precision is lost):
 *   {"type":"data","cursor":str,"seq":int,"kind":str,"key":str,
 *    "emitted_at_unix_micros":int,"ingested_at_unix_micros":int,
 *    "snapshot":bool,
 *    then for a quote tick:
 *      "quote":{"bid":str,"bid_size":int,"ask":str,"ask_size":int},
 *      "exchange_time_unix_nanos":int,"venue":str}
 *    for a trade tick:
 *      "trade":{"price":str,"size":int,"side":"SIDE_BUY"|"SIDE_SELL"|
 *               "SIDE_UNSPECIFIED"|int},
 *      "exchange_time_unix_nanos":int,"venue":str}
 *    for any other body:
 *      "body_base64":str}
 *   {"type":"heartbeat","cursor":str,"server_unix_micros":int}
 *   {"type":"end_of_backlog","cursor":str}
 *   {"type":"gap","cursor":str,"missed":int,"reason":str|int,"from_cursor":str}
 *     reason is the GapReason name (e.g. "GAP_SLOW_CONSUMER"), or its number
 *     when this build does not know it
 *   {"type":"unknown","cursor":str}   an event kind newer than this build
 *
 * With a topic (tickfmt_*_topic, tickfan tail with several topics), every
 * human line has "topic=T" right before "cursor=" ("... seq=12 topic=fx
 * cursor=C", "end-of-backlog (caught up, live from here) topic=fx
 * cursor=C") and every JSON object "topic":str right after "type".
 */
#ifndef TICKFAN_TICKFMT_H
#define TICKFAN_TICKFMT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "events/v1/watcher.pb-c.h"

/* Big enough for any tickfmt_price() result, NUL included. */
#define TICKFMT_PRICE_MAX 64
/* Big enough for any tickfmt_time_micros() result, NUL included. */
#define TICKFMT_TIME_MAX 64
/* Exponents beyond +-this are printed as "<mantissa>e<exponent>". */
#define TICKFMT_PRICE_EXP_LIMIT 30

/*
 * Writes mantissa * 10^exponent into buf (TICKFMT_PRICE_MAX bytes) with
 * exactly -exponent decimals ("189.1200", "-0.0500"); exponent >= 0 gives an
 * integer ("42", "4200"). Returns the length.
 */
size_t tickfmt_price(char *buf, int64_t mantissa, int32_t exponent);

/*
 * Writes microseconds since the Unix epoch as ISO 8601 UTC with six
 * decimals ("2026-11-24T10:00:01.123456Z") into buf (TICKFMT_TIME_MAX
 * bytes). Returns the length.
 */
size_t tickfmt_time_micros(char *buf, int64_t unix_micros);

/* Writes len bytes of s as a quoted JSON string. Returns 0 or -EIO. */
int tickfmt_json_string(FILE *out, const char *s, size_t len);

/*
 * Writes s for a terminal: control characters, backslash and invalid UTF-8
 * as \xNN, so a string from the server cannot drive the terminal. Returns 0
 * or -EIO.
 */
int tickfmt_safe_string(FILE *out, const char *s);

/* Writes one human line for ev, '\n' included. Returns 0 or -EIO. */
int tickfmt_human(FILE *out, const Events__V1__WatchEvent *ev);

/* Writes one JSON object for ev, '\n' included. Returns 0 or -EIO. */
int tickfmt_json(FILE *out, const Events__V1__WatchEvent *ev);

/*
 * The same lines for an event of topic (tickfan tail with several topics):
 * the human line gets "topic=T " right before "cursor=", the JSON object a
 * "topic" key right after "type". topic NULL: exactly tickfmt_human /
 * tickfmt_json.
 */
int tickfmt_human_topic(FILE *out, const char *topic, const Events__V1__WatchEvent *ev);
int tickfmt_json_topic(FILE *out, const char *topic, const Events__V1__WatchEvent *ev);

/*
 * Parses a point in time for --start-time: Unix microseconds ("1795502781323766")
 * or RFC 3339 in UTC ("2026-11-24T06:35:00Z", up to 6 fraction digits).
 * Returns 0 with *unix_us set, or -EINVAL.
 */
int tickfmt_parse_time(const char *text, int64_t *unix_us);

#endif
