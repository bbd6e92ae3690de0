// A small deterministic Sample for storage tests: `tag` decides its bytes,
// label, logits and request id, so a read-back can be checked field by field.
#pragma once

#include <cstdint>
#include <string>

#include "storage/sample.h"

namespace distilld::testing {

inline storage::Sample MakeSample(int64_t tag, int64_t time_us = 0) {
  storage::Sample s;
  s.dtype = storage::DType::kFloat32;
  s.shape = {2, 3};
  s.data.resize(24);
  for (size_t i = 0; i < s.data.size(); ++i) s.data[i] = static_cast<char>(tag * 31 + i);
  s.label = tag % 10;
  s.teacher_logits = {static_cast<float>(tag), 0.5f};
  s.ingest_time_us = time_us;
  s.request_id = "req-" + std::to_string(tag);
  return s;
}

}  // namespace distilld::testing
