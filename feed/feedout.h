/*
 * feedout: where generated or replayed frames go.
 *
 *   udp://HOST:PORT         datagrams of whole frames back to back (unicast,
 *                           or multicast for a 224.0.0.0/4 address)
 *   tcp://HOST:PORT         a stream to a receiver that listens
 *   tcp-listen://ADDR:PORT  waits for one receiver to connect, then streams
 *   a capture file          (feedout_open_file), records stamped with the
 *                           time given for each frame
 *
 * Blocking I/O on the calling thread; one thread per feedout. Frames are
 * copied into datagrams or buffers on feedout_put and leave on a full
 * datagram batch or buffer, or on feedout_flush.
 */
#ifndef TICKFAN_FEEDOUT_H
#define TICKFAN_FEEDOUT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FEEDOUT_MTU_PAYLOAD 1472 /* UDP payload that fits an Ethernet MTU */
#define FEEDOUT_DGRAM_MAX 65507  /* the largest UDP payload */

typedef struct feedout feedout_t;

struct feedout_options {
    /* UDP: frames per datagram at most. 0: as many as fit 1,472 bytes;
     * otherwise as many as fit 65,507. */
    size_t batch;
    int ttl;           /* multicast TTL; -1: the system's default (1) */
    const char *iface; /* multicast: IPv4 address of the interface to send on */
    FILE *notice;      /* where "listening" and "connected" lines go */
    /* set (by a signal handler) to give up waiting for a connection */
    const volatile sig_atomic_t *stop;
};

/* Resolves and opens the destination; for tcp-listen, binds, prints
 * "msg=listening addr=ADDR:PORT" (the port actually bound: 0 picks one) and
 * waits for the receiver. Returns 0, -EINVAL (a bad spec or option, said in
 * err), -EINTR (stopped while waiting) or -errno (what failed and with
 * which address, in err). */
int feedout_open(feedout_t **out, const char *spec, const struct feedout_options *o, char *err,
                 size_t errlen);
/* A capture file at `path` (created or truncated). */
int feedout_open_file(feedout_t **out, const char *path, int64_t created_us, char *err,
                      size_t errlen);

/* The largest frame feedout_put takes. */
size_t feedout_max_frame(const feedout_t *o);

/* Queues one frame (copied); `time_us` is its capture record time. May
 * send. Returns 0 or -errno (the destination failed: said in err). */
int feedout_put(feedout_t *o, const uint8_t *frame, size_t len, int64_t time_us, char *err,
                size_t errlen);
/* Sends or writes everything queued. Returns 0 or -errno (said in err). */
int feedout_flush(feedout_t *o, char *err, size_t errlen);
/* Flushes, closes, frees. Returns 0 or -errno (said in err). */
int feedout_close(feedout_t *o, char *err, size_t errlen);

struct feedout_stats {
    uint64_t frames;      /* handed to the kernel (or written) */
    uint64_t datagrams;   /* UDP */
    uint64_t bytes;       /* of frames */
    uint64_t send_errors; /* UDP sends refused and retried (ECONNREFUSED, ENOBUFS) */
};
void feedout_get_stats(const feedout_t *o, struct feedout_stats *out);

#endif
