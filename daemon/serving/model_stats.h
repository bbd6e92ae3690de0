// ModelStats: what each served version did, in the shape of the KServe v2
// statistics extension as Triton defines it (GET /v2/models/{name}/stats).
//
// Per version it keeps how many samples were inferred and in how many forward
// passes, and for the requests it answered, counts and summed durations of:
//   success, fail       the whole request, from its handler being called to
//                       its response being handed to the server;
//   queue               waiting in the batcher's queue;
//   compute_input       decoding the request body into the input tensor;
//   compute_infer       the forward pass the request ran in (each request of
//                       a batch counts the batch's whole forward pass, as
//                       Triton counts it);
//   compute_output      encoding the response.
// and, per executed batch size, the batch's own input assembly, forward pass
// and output split.
//
// Thread-safety: every method may be called concurrently (one mutex, held
// for a few map updates). Ownership: none beyond its own maps.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distilld::daemon {

struct DurationStat {
  uint64_t count = 0;
  uint64_t ns = 0;
  void Add(uint64_t duration_ns) {
    ++count;
    ns += duration_ns;
  }
};

// One executed batch size: its forward passes.
struct BatchSizeStats {
  int64_t batch_size = 0;
  DurationStat compute_input, compute_infer, compute_output;
};

struct VersionStats {
  int64_t version = 0;
  int64_t last_inference_ms = 0;  // wall clock, ms since the epoch; 0 if none yet
  uint64_t inference_count = 0;   // samples inferred (a request of 8 counts 8)
  uint64_t execution_count = 0;   // forward passes (a batch of many requests counts 1)
  DurationStat success, fail, queue, compute_input, compute_infer, compute_output;
  std::vector<BatchSizeStats> batch_stats;  // by batch size, ascending
};

// How long one answered request spent where, in microseconds.
struct RequestTiming {
  int64_t total_us = 0;
  int64_t queue_us = 0;
  int64_t input_us = 0;
  int64_t infer_us = 0;
  int64_t output_us = 0;
};

struct ModelStatsOptions {
  // Wall clock in ms since the epoch, for last_inference. Default: the
  // system clock; tests inject a fixed one.
  std::function<int64_t()> wall_ms;
  // Versions kept; beyond it the oldest version's record is dropped (a
  // daemon promotes a version a round, for months). Default 64.
  size_t max_versions = 64;
};

class ModelStats {
 public:
  explicit ModelStats(ModelStatsOptions options = {});
  ModelStats(const ModelStats&) = delete;
  ModelStats& operator=(const ModelStats&) = delete;

  // One forward pass of `version` over `samples` samples.
  void RecordExecution(int64_t version, int64_t samples, int64_t input_us, int64_t infer_us,
                       int64_t output_us);
  // A request `version` answered.
  void RecordSuccess(int64_t version, const RequestTiming& timing);
  // A request that failed; `version` is the one it was resolved to.
  void RecordFailure(int64_t version, int64_t total_us);

  // Versions with a record, ascending.
  std::vector<VersionStats> All() const;
  // One version's record; nullopt if it has none.
  std::optional<VersionStats> Of(int64_t version) const;

 private:
  struct Entry {
    VersionStats stats;
    std::map<int64_t, BatchSizeStats> batches;
  };
  Entry& EntryLocked(int64_t version);
  VersionStats Render(const Entry& e) const;

  ModelStatsOptions options_;
  mutable std::mutex mu_;
  std::map<int64_t, Entry> versions_;  // guarded by mu_
};

// The statistics extension's response body for model `name`:
// {"model_stats":[{"name","version","last_inference","inference_count",
// "execution_count","inference_stats":{...},"batch_stats":[...]}]}, the
// fields Triton returns (cache_hit and cache_miss always zero: no cache).
std::string EncodeModelStats(std::string_view name, const std::vector<VersionStats>& versions);

}  // namespace distilld::daemon
