/*
 * sim: deterministic quote/trade generator. Ingest thread only.
 */
#include "sim.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "market/v1/tick.pb-c.h"
#include "topics.h"

#define SIM_MAX_SYMBOLS 64
#define SIM_MAX_SYMBOL_LEN 16
#define PRICE_EXPONENT (-4) /* prices in 1/10000 */

struct sim {
    char **symbols;
    int64_t *mid; /* mid price per symbol, fixed point */
    size_t count;
    uint64_t rng;
};

static uint64_t next_rand(uint64_t *state)
{
    /* splitmix64 */
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sim_destroy(sim_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->count; i++)
        free(s->symbols[i]);
    free(s->symbols);
    free(s->mid);
    free(s);
}

int sim_create(sim_t **out, const char *symbols, uint64_t seed)
{
    *out = NULL;
    sim_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->symbols = calloc(SIM_MAX_SYMBOLS, sizeof(char *));
    s->mid = calloc(SIM_MAX_SYMBOLS, sizeof(int64_t));
    if (!s->symbols || !s->mid)
        goto out_nomem;
    s->rng = seed;
    for (const char *p = symbols; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len > SIM_MAX_SYMBOL_LEN || !topics_name_valid(p, len) ||
            s->count == SIM_MAX_SYMBOLS)
            goto out_inval;
        s->symbols[s->count] = strndup(p, len);
        if (!s->symbols[s->count])
            goto out_nomem;
        /* start between 20.0000 and 520.0000 */
        s->mid[s->count] = 200000 + (int64_t)(next_rand(&s->rng) % 5000000);
        s->count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (s->count == 0)
        goto out_inval;
    *out = s;
    return 0;

out_inval:
    sim_destroy(s);
    return -EINVAL;
out_nomem:
    sim_destroy(s);
    return -ENOMEM;
}

void sim_next(sim_t *s, int64_t now_ns, struct sim_tick *out)
{
    uint64_t r = next_rand(&s->rng);
    size_t i = (size_t)(r % s->count);
    r /= s->count;
    /* random walk: -5 .. +5 ticks of 0.0001 per event, floor at 1.0000 */
    int64_t step = (int64_t)(r % 11) - 5;
    r /= 11;
    s->mid[i] += step;
    if (s->mid[i] < 10000)
        s->mid[i] = 10000;
    int64_t half_spread = 1 + (int64_t)(r % 3);
    r /= 3;

    Tickfan__Market__V1__Tick tick = TICKFAN__MARKET__V1__TICK__INIT;
    Tickfan__Market__V1__Quote quote = TICKFAN__MARKET__V1__QUOTE__INIT;
    Tickfan__Market__V1__Trade trade = TICKFAN__MARKET__V1__TRADE__INIT;
    tick.symbol = s->symbols[i];
    tick.venue = "SIMX";
    tick.exchange_time_unix_nanos = now_ns;
    tick.price_exponent = PRICE_EXPONENT;
    bool is_trade = (r % 5) == 0; /* one in five events is a trade */
    r /= 5;
    if (is_trade) {
        bool buy = r & 1;
        trade.price = buy ? s->mid[i] + half_spread : s->mid[i] - half_spread;
        trade.size = 100 * (int64_t)(1 + (r >> 1) % 10);
        trade.aggressor_side =
            buy ? TICKFAN__MARKET__V1__SIDE__SIDE_BUY : TICKFAN__MARKET__V1__SIDE__SIDE_SELL;
        tick.body_case = TICKFAN__MARKET__V1__TICK__BODY_TRADE;
        tick.trade = &trade;
        out->kind = "trade";
    } else {
        quote.bid_price = s->mid[i] - half_spread;
        quote.ask_price = s->mid[i] + half_spread;
        quote.bid_size = 100 * (int64_t)(1 + r % 10);
        quote.ask_size = 100 * (int64_t)(1 + (r / 10) % 10);
        tick.body_case = TICKFAN__MARKET__V1__TICK__BODY_QUOTE;
        tick.quote = &quote;
        out->kind = "quote";
    }
    out->symbol = s->symbols[i];
    out->body_len = tickfan__market__v1__tick__pack(&tick, out->body);
}
