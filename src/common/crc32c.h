/*
 * crc32c: CRC-32C (Castagnoli), as used by iSCSI, ext4 and SCTP.
 *
 * Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise.
 * Pure functions, any thread.
 */
#ifndef TICKFAN_CRC32C_H
#define TICKFAN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) over `len` bytes. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
