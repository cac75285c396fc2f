// abslmutex: the one C++ file of tickfan. absl::SetMutexDeadlockDetectionMode
// has no C entry point (abseil is a C++ library), so this wraps it for the
// C code; nothing else of abseil is used.
#include "abslmutex.h"

#include <absl/synchronization/mutex.h>

void abslmutex_deadlock_detection(bool on)
{
    absl::SetMutexDeadlockDetectionMode(on ? absl::OnDeadlockCycle::kAbort
                                           : absl::OnDeadlockCycle::kIgnore);
}
