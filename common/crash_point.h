// Named crash points for the crash tests: the process kills itself with
// SIGKILL at a point whose name the environment variable DISTILLD_CRASH_AT
// holds (read once, at the first call). Unset, a point costs one comparison
// of a cached empty string. Like RocksDB's kill points, this makes a crash
// land exactly in the window a test wants to cover (between a version's file
// and its registry row, between activation and the cursor write, ...), which
// a timed kill from outside hits only by luck.
//
// The points in use are listed in docs/operations.md ("Crash points").
// Thread-safe.
#pragma once

#include <string_view>

namespace distilld {

// Kills the process (SIGKILL: no destructors, no flush, like a power cut or
// the OOM killer) if DISTILLD_CRASH_AT == point.
void CrashPoint(std::string_view point);

}  // namespace distilld
