// The process's open-file limit (RLIMIT_NOFILE), raised to what the server
// needs: every connection is a descriptor, and a server out of descriptors
// cannot accept the client that would evict an idle one.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace distilld {

// Raises the soft limit to min(want, hard limit) if it is lower; never
// lowers it. Returns the soft limit in force afterwards (it may be below
// `want` when the hard limit is). IoError if the kernel refuses.
Result<uint64_t> RaiseFdLimit(uint64_t want);

}  // namespace distilld
