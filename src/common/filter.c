/*
 * filter: kinds/keys matching. Owned by one shard thread.
 */
#include "filter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int cmp_len_bytes(const char *a, size_t al, const char *b, size_t bl)
{
    if (al != bl)
        return al < bl ? -1 : 1;
    return memcmp(a, b, al);
}

static int cmp_items(const void *pa, const void *pb)
{
    const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;
    return cmp_len_bytes(a, strlen(a), b, strlen(b));
}

static void set_free(struct filter_set *s)
{
    for (size_t i = 0; i < s->count; i++)
        free(s->items[i]);
    free(s->items);
    s->items = NULL;
    s->count = 0;
}

static int set_init(struct filter_set *s, char **src, size_t n, size_t max, const char *too_many,
                    const char **why)
{
    s->items = NULL;
    s->count = 0;
    if (n == 0)
        return 0;
    if (n > max) {
        *why = too_many;
        return -EINVAL;
    }
    s->items = calloc(n, sizeof(char *));
    if (!s->items)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(src[i]);
        if (len == 0 || len > 255) {
            *why = len == 0 ? "empty entry in a filter list" : "filter entry over 255 bytes";
            set_free(s);
            return -EINVAL;
        }
        s->items[s->count] = strdup(src[i]);
        if (!s->items[s->count]) {
            set_free(s);
            return -ENOMEM;
        }
        s->count++;
    }
    qsort(s->items, s->count, sizeof(char *), cmp_items);
    /* drop duplicates */
    size_t w = 1;
    for (size_t r = 1; r < s->count; r++) {
        if (strcmp(s->items[r], s->items[w - 1]) == 0)
            free(s->items[r]);
        else
            s->items[w++] = s->items[r];
    }
    s->count = w;
    return 0;
}

int filter_init(struct filter *f, char **kinds, size_t nkinds, char **keys, size_t nkeys,
                const char **why)
{
    int rc =
        set_init(&f->kinds, kinds, nkinds, FILTER_MAX_KINDS, "too many kinds (at most 64)", why);
    if (rc)
        return rc;
    rc = set_init(&f->keys, keys, nkeys, FILTER_MAX_KEYS, "too many keys (at most 100000)", why);
    if (rc) {
        set_free(&f->kinds);
        return rc;
    }
    return 0;
}

static bool set_has(const struct filter_set *s, const char *v, size_t len)
{
    size_t lo = 0, hi = s->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = s->items[mid];
        int c = cmp_len_bytes(m, strlen(m), v, len);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

bool filter_match(const struct filter *f, const char *kind, size_t kind_len, const char *key,
                  size_t key_len)
{
    if (f->kinds.count && !set_has(&f->kinds, kind, kind_len))
        return false;
    if (f->keys.count && !set_has(&f->keys, key, key_len))
        return false;
    return true;
}

void filter_free(struct filter *f)
{
    set_free(&f->kinds);
    set_free(&f->keys);
}
