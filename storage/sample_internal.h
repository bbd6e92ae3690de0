// Private to storage/: the sample encoding in pieces, so a writer can hand
// RocksDB the data bytes in place instead of copying them into a string first.
#pragma once

#include <string>

#include "common/status.h"
#include "storage/sample.h"

namespace distilld::storage {

// Validates `s` like EncodeSample and appends to *out everything of its
// encoding except the data bytes, with `ingest_time_us` in place of
// s.ingest_time_us. The encoding is then
//   out[start, start + *head_len) + s.data + out[start + *head_len, end)
// where start is out->size() on entry.
Status EncodeSampleFraming(const Sample& s, int64_t ingest_time_us, std::string* out,
                           size_t* head_len);

}  // namespace distilld::storage
