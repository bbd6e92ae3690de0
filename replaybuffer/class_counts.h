// Per-class counters as stored in the replay buffer's and the holdout set's
// state records: a varint count of classes, then (zigzag class, varint
// count) pairs. Internal to replaybuffer/; thread-compatible free functions.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "storage/coding.h"

namespace distilld::replaybuffer {

void PutClassCounts(std::string* out, const std::map<int64_t, uint64_t>& counts);

// Reads what PutClassCounts wrote into `counts` (entries added or
// overwritten). False on truncated or implausible input.
bool GetClassCounts(storage::coding::Reader* in, std::map<int64_t, uint64_t>* counts);

}  // namespace distilld::replaybuffer
