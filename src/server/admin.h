/*
 * admin: tickfan.admin.v1.Admin, operator views of the running server.
 *
 * ListSubscribers: the shards copy their streams into a snapshot at a tick
 * (only while someone asked in the last seconds, so an idle admin costs
 * nothing); a call waits on its shard until every shard's snapshot is newer
 * than the request, then answers from them.
 */
#ifndef TICKFAN_ADMIN_H
#define TICKFAN_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "shard.h"

/* The admin service (/tickfan.admin.v1.Admin/ListSubscribers). */
extern const struct service admin_service;

#endif
