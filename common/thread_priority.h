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

// Moves the calling thread to SCHED_IDLE: it runs only on CPU time that no
// normal thread wants, and a normal thread that wakes up preempts it at
// once (a niced thread keeps a share of the CPU, and time slices of a few
// milliseconds, when the cores are busy). Work on such a thread pauses
// while the machine is saturated. IoError if the kernel refuses.
Status MakeCurrentThreadIdlePriority();

}  // namespace distilld
