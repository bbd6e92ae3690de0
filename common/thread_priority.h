// Lowering one thread's CPU priority (Linux nice values are per thread).
#pragma once

#include "common/status.h"

namespace distilld {

// Adds `increment` (> 0) to the calling thread's nice value; threads it
// starts afterwards (e.g. OpenMP workers) inherit it. Other threads of the
// process keep theirs. An unprivileged process cannot undo this, so call it
// only on threads that do background work for their whole life. IoError if
// the kernel refuses; increment <= 0 does nothing.
Status LowerCurrentThreadPriority(int increment);

}  // namespace distilld
