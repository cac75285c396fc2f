/*
 * sim: the built-in market simulator.
 *
 * Quotes and trades over a set of symbols, prices on a random walk, fully
 * determined by the seed. Used by the ingest thread only.
 */
#ifndef TICKFAN_SIM_H
#define TICKFAN_SIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct sim sim_t;

/* `symbols`: comma-separated list of 1..64 symbols of 1..16 characters
 * [A-Za-z0-9._-]. Returns 0, -EINVAL (bad list) or -ENOMEM. */
int sim_create(sim_t **out, const char *symbols, uint64_t seed);
void sim_destroy(sim_t *s);

struct sim_tick {
    const char *kind;   /* "quote" or "trade" (static) */
    const char *symbol; /* owned by the simulator */
    uint8_t body[128];  /* encoded tickfan.market.v1.Tick */
    size_t body_len;
};

/* Generates the next tick, stamped with exchange time `now_ns`. */
void sim_next(sim_t *s, int64_t now_ns, struct sim_tick *out);

#endif
