/*
 * fault_msync: fault injection for the integration tests, loaded into
 * tickfand with LD_PRELOAD. msync fails with EIO (a disk that stopped
 * writing) while the file named by TICKFAN_FAULT_MSYNC_FILE exists; it is
 * the C library's msync otherwise. Any thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int msync(void *addr, size_t len, int flags)
{
    const char *flag = getenv("TICKFAN_FAULT_MSYNC_FILE");
    if (flag && access(flag, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_msync, addr, len, flags);
}
