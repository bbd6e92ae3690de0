// CaptureIndex: remembers which stored samples a captured inference request
// became, for a limited time, so POST /v1/feedback can attach labels to them.
//
// Entries expire after `ttl_us` and the index holds at most `max_entries`
// (the oldest go first), so memory stays bounded whatever the traffic.
// Thread-safe (internal mutex). Time comes from the injected clock.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>

#include "common/clock.h"
#include "storage/sample_store.h"

namespace distilld::daemon {

class CaptureIndex {
 public:
  struct Entry {
    storage::SampleId first = 0;
    int64_t count = 0;
    int64_t expires_us = 0;
  };

  CaptureIndex(Clock* clock, int64_t ttl_us, size_t max_entries = 100000, uint64_t seed = 1);

  // Decides whether to capture one request, with probability `fraction`.
  bool ShouldCapture(double fraction);
  void Put(const std::string& request_id, storage::SampleId first, int64_t count);
  // The live entry for `request_id`, or nullopt if unknown or expired.
  std::optional<Entry> Find(const std::string& request_id);
  void set_ttl_us(int64_t ttl_us);
  size_t size();

 private:
  void EvictLocked(int64_t now);
  Clock* clock_;
  std::mutex mu_;
  int64_t ttl_us_;                                  // guarded by mu_
  size_t max_entries_;
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
  std::deque<std::pair<int64_t, std::string>> order_;  // (expires, id), guarded by mu_
  std::mt19937_64 rng_;                              // guarded by mu_
};

}  // namespace distilld::daemon
