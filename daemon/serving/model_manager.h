// ModelManager: owns the served student and swaps versions without a pause.
//
// The active model sits behind a shared_ptr that readers copy out under a
// short mutex hold (Active()); an inference batch keeps its copy until it
// finishes, so in-flight batches complete on the version they started with.
// Publish() loads a version from disk (checksum verified), optionally freezes
// and optimizes it, warms it up at the batch sizes in use (on a thread of
// its own at lower priority), and only then swaps it in. A retired version
// is destroyed by the next Publish, not by the inference batch that happens
// to drop the last reference, so freeing a module never lands on the
// request path. Publishes are serialised, and a publish first waits until the
// version retired by the previous swap is released, so at most two versions
// are alive (the active one plus one being loaded or finishing its batches).
//
// Implements learner::VersionPublisher: the learner (or the rollback
// endpoint) calls Publish() from its own thread; the request path only calls
// Active()/Find(). Thread-safe. The manager owns the models; callers share
// ownership of a ServedModel only while they use it.
#pragma once

#include <torch/script.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "daemon/http/metrics.h"
#include "learner/publisher.h"
#include "storage/registry.h"

namespace distilld::daemon {

// One loaded version. Immutable after construction except for the module's
// internal executor state, which LibTorch guards (forward is thread-safe).
class ServedModel {
 public:
  ServedModel(int64_t version, torch::jit::Module module, std::string sha256);
  ~ServedModel();
  ServedModel(const ServedModel&) = delete;
  ServedModel& operator=(const ServedModel&) = delete;

  int64_t version() const { return version_; }
  const std::string& sha256() const { return sha256_; }
  // Logits [N, classes] for float input [N, ...input_shape]. c10::Error is
  // converted to Internal; nothing throws.
  Result<at::Tensor> Forward(const at::Tensor& input) const;

  // ServedModel objects alive in the process (for tests of the two-version bound).
  static int alive();

 private:
  int64_t version_;
  mutable torch::jit::Module module_;
  std::string sha256_;
};

struct ModelManagerOptions {
  // Directory that VersionRecord::path is relative to. Required.
  std::string state_dir;
  std::vector<int64_t> input_shape = {1, 28, 28};  // per sample
  int64_t classes = 10;
  // Freeze and run optimize_for_inference before serving (config model.optimize).
  bool optimize = true;
  // Serve int8 (config model.precision: int8): every layer of a built-in
  // student is converted to the native int8 kernels
  // (learner::QuantizeDynamicInt8) before optimizing; a module that is not a
  // built-in architecture cannot be converted and its Publish fails.
  // Default false (float).
  bool int8 = false;
  // Batch sizes to warm up at: the profiling executor specialises per shape,
  // so each size the batcher produces should see a few passes first. Default
  // {1, 2, 4, ..., max_batch_size} filled in by the daemon.
  std::vector<int64_t> warmup_batch_sizes = {1};
  int warmup_iterations = 3;
  // Publish loads, optimizes and warms up a version on a short-lived thread
  // of its own, with this added to its nice value and one intra-op thread,
  // so that under load a swap takes CPU only from what requests leave idle
  // (a publish then takes longer, not the requests). 0 = the caller's
  // priority. The first publish, with nothing served yet, always runs at the
  // caller's priority: the daemon is not ready until it ends.
  int prepare_nice = 10;
  // How long Publish waits for the previously retired version to be released
  // by in-flight batches before giving up with Unavailable.
  std::chrono::milliseconds retire_wait = std::chrono::seconds(30);
  // Optional; not owned. Gets active version and swap metrics.
  MetricsRegistry* metrics = nullptr;
  // Not owned; default Clock::Real().
  Clock* clock = nullptr;
};

class ModelManager : public learner::VersionPublisher {
 public:
  static Result<std::unique_ptr<ModelManager>> Create(const ModelManagerOptions& options);
  ~ModelManager() override = default;

  // Loads <state_dir>/<version.path>, checks version.sha256 (if set), then
  // PublishModule(). On failure the served version stays.
  Status Publish(const storage::VersionRecord& version) override = 0;
  // Prepares (optimize + warm-up) and swaps in an already loaded module.
  virtual Status PublishModule(int64_t version, torch::jit::Module module, std::string sha256) = 0;

  // The active version, or null before the first publish. Cheap.
  virtual std::shared_ptr<const ServedModel> Active() const = 0;
  // The active version or the one retired by the last swap if it is still
  // alive and has this number; null otherwise.
  virtual std::shared_ptr<const ServedModel> Find(int64_t version) const = 0;
  virtual int64_t swaps() const = 0;
};

}  // namespace distilld::daemon
