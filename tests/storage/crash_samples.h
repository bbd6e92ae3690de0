// Deterministic samples shared by the crash helper and the crash test: both
// sides can regenerate batch b byte for byte from its number alone.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "storage/sample.h"

namespace distilld::crashtest {

inline uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline size_t BatchSize(uint64_t batch) { return 1 + SplitMix(batch) % 16; }

inline storage::Sample MakeSample(uint64_t batch, size_t index) {
  storage::Sample s;
  s.dtype = storage::DType::kFloat32;
  s.shape = {1, 8, 8};
  s.data.resize(64 * 4);
  uint64_t x = SplitMix(batch * 1000 + index);
  for (size_t i = 0; i < s.data.size(); i += 8) {
    x = SplitMix(x);
    for (size_t k = 0; k < 8; ++k) s.data[i + k] = static_cast<char>(x >> (8 * k));
  }
  s.label = static_cast<int64_t>((batch * 7 + index) % 10);
  s.teacher_logits.assign(10, 0.0f);
  s.teacher_logits[static_cast<size_t>(*s.label)] = 1.0f;
  s.ingest_time_us = 1'700'000'000'000'000 + static_cast<int64_t>(batch);
  s.request_id = "b" + std::to_string(batch) + "-i" + std::to_string(index);
  return s;
}

inline std::vector<storage::Sample> MakeBatch(uint64_t batch) {
  std::vector<storage::Sample> out;
  for (size_t i = 0; i < BatchSize(batch); ++i) out.push_back(MakeSample(batch, i));
  return out;
}

// Parses "b<batch>-i<index>"; false for anything else.
inline bool ParseRequestId(const std::string& id, uint64_t* batch, size_t* index) {
  unsigned long long b = 0, i = 0;
  int consumed = 0;
  if (std::sscanf(id.c_str(), "b%llu-i%llu%n", &b, &i, &consumed) != 2) return false;
  if (static_cast<size_t>(consumed) != id.size()) return false;
  *batch = b;
  *index = static_cast<size_t>(i);
  return true;
}

// Buffer options used by both sides.
inline constexpr size_t kBufferCapacity = 40;

}  // namespace distilld::crashtest
