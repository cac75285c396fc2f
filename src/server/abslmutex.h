/*
 * abslmutex: abseil's Mutex deadlock detector, on or off.
 *
 * gRPC 1.51 locks absl::Mutex on every operation. Debian's abseil is a debug
 * build, so each lock and unlock also runs the deadlock detector, which
 * keeps a process-wide lock graph behind one spinlock. Call before any
 * other thread runs (main, before grpc_init).
 */
#ifndef TICKFAN_ABSLMUTEX_H
#define TICKFAN_ABSLMUTEX_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* on: abseil's default (report a lock cycle and abort); off: ignore. */
void abslmutex_deadlock_detection(bool on);

#ifdef __cplusplus
}
#endif

#endif
