/*
 * topics: name -> log registry. Built by main, then read-only.
 */
#include "topics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool topics_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > TOPIC_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int topics_add(struct topics *t, const char *name, size_t log_size)
{
    size_t len = strlen(name);
    if (!topics_name_valid(name, len))
        return -EINVAL;
    if (topics_find(t, name, len))
        return 0;
    if (t->count >= TOPICS_MAX)
        return -ENOSPC;
    struct topic *grown = realloc(t->items, (t->count + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    t->items = grown;
    struct topic *tp = &t->items[t->count];
    memset(tp, 0, sizeof(*tp));
    tp->name = strdup(name);
    if (!tp->name)
        return -ENOMEM;
    int rc = ringlog_create(&tp->log, name, log_size);
    if (rc) {
        free(tp->name);
        return rc;
    }
    tp->index = t->count++;
    return 0;
}

struct topic *topics_find(const struct topics *t, const char *name, size_t len)
{
    for (size_t i = 0; i < t->count; i++)
        if (strlen(t->items[i].name) == len && memcmp(t->items[i].name, name, len) == 0)
            return &t->items[i];
    return NULL;
}

void topics_destroy(struct topics *t)
{
    for (size_t i = 0; i < t->count; i++) {
        ringlog_destroy(t->items[i].log);
        free(t->items[i].name);
    }
    free(t->items);
    t->items = NULL;
    t->count = 0;
}
