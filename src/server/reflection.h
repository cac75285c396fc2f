/*
 * reflection: the standard gRPC server reflection service (grpc.reflection
 * v1 and v1alpha), from descriptors compiled in at build time.
 */
#ifndef TICKFAN_REFLECTION_H
#define TICKFAN_REFLECTION_H

#include <stddef.h>

#include "shard.h"

/* The reflection service, v1 and v1alpha. */
extern const struct service reflection_service;
/* The fully qualified names of the services described (for tests, logs). */
size_t reflection_services(const char **out, size_t max);

#endif
