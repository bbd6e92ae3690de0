// Private to learner/: one learning round as named steps over a round state.
// The loop (distiller.cc) owns the thread, the queue and the triggers and
// hands each round to a RoundRunner; the runner owns the models and the
// training state. They talk through RoundHooks, so the steps know nothing of
// threads or queues, and the loop nothing of tensors.
//
// RoundRunner is used by one thread at a time (the learner thread, or the
// RunRoundNow caller while the thread is not running). It does not own the
// store, registry, buffer, holdout, publisher or teacher (DistillerOptions'
// pointers; they must outlive it).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "learner/distiller.h"
#include "learner/gate.h"
#include "learner/train_step.h"
#include "learner/version_store.h"
#include "learner/weight_average.h"
#include "storage/registry.h"
#include "storage/sample.h"

namespace distilld::learner::internal {

// What a round needs from the loop that runs it. Called on the round's
// thread.
class RoundHooks {
 public:
  virtual ~RoundHooks() = default;
  // The liveness signal (DistillerOptions::on_heartbeat).
  virtual void Beat() = 0;
  // Cancelled if Stop() was called.
  virtual Status CheckStop() = 0;
  // Waits while inference is busy (DistillerOptions::inference_busy), at
  // most learner.max_yield_s per round; Cancelled if stopped meanwhile.
  virtual Status YieldToInference() = 0;
  // DistillerProgress::state.
  virtual void SetState(LearnerState state) = 0;
  virtual void SetTotalSteps(int64_t total) = 0;
  // After each training step (1-based); samples_per_s < 0 leaves it.
  virtual void ReportStep(int64_t step, double loss, double samples_per_s) = 0;
  // The round has read incoming samples up to last_id (0: it found none):
  // a round requested from now on is queued behind it.
  virtual void MarkRead(storage::SampleId last_id) = 0;
  // Why a round found nothing to read, naming the round that took it.
  virtual std::string SkipReason() = 0;
};

// Everything a round produces for the registry, and what its steps pass on.
struct RoundState {
  storage::RoundRecord record;
  std::vector<storage::StoredSample> incoming;  // read this round
  storage::SampleId last_id = 0;
  std::vector<storage::Sample> train_new;  // new samples used for training (not held out)
  std::vector<storage::Sample> replay;     // drawn from the buffer
};

// A trained candidate and what the gate needs to know of its training.
struct TrainedCandidate {
  torch::jit::Module model;
  std::set<int64_t> trained_classes;  // join the candidate's label space
};

// The gate's verdict with what the registry and the promotion event record.
struct GateOutcome {
  // The round's evaluation, the gate's verdict in it; also the new
  // version's metrics.
  storage::RoundEvaluation evaluation;
  std::string summary;  // one line for the promotion event
};

class RoundRunner {
 public:
  // `options` must outlive the runner; its learner and replay fields may be
  // changed between rounds (by the runner's thread only).
  RoundRunner(const DistillerOptions& options, std::unique_ptr<VersionStore> versions, torch::jit::Module active,
              int64_t active_id);

  // Runs the steps of one round into `rs`. OK with rs->record.outcome set
  // for every decided round (promoted, rejected, skipped, aborted for a
  // diverging loss); an error status otherwise (Cancelled if stopped), and
  // the samples stay unconsumed.
  Status Run(RoundState* rs, RoundHooks& hooks);

  int64_t active_id() const { return active_id_; }

 private:
  // ---- round.cc: the steps around training
  Status SyncActive();
  Status ReadIncoming(RoundState* rs, RoundHooks& hooks);
  Status LabelWithTeacher(RoundState* rs, RoundHooks& hooks);
  Status SplitHoldout(RoundState* rs);
  Status DrawReplay(RoundState* rs, RoundHooks& hooks);
  Status Consume(RoundState* rs);
  // Teacher logits for samples lacking them; returns how many were computed.
  Result<size_t> AttachTeacherLogits(const std::vector<storage::Sample*>& samples, RoundHooks& hooks);

  // ---- round_train.cc
  Result<TrainedCandidate> Train(RoundState* rs, RoundHooks& hooks);
  Result<Batch> AssembleTrainingData(const RoundState& rs, RoundHooks& hooks);
  Status RefreshReplayViews(Batch& data, int64_t first, const torch::Tensor& originals, RoundHooks& hooks);
  Result<int64_t> BalancedFinetune(const RoundState& rs, torch::jit::Module& candidate, const StepOptions& so,
                                   double temperature, int64_t main_steps, WeightAverage* average,
                                   RoundHooks& hooks);
  int64_t RecycleDormant(torch::jit::Module& candidate, const torch::Tensor& inputs, Status* error);
  std::set<int64_t> TrainedClasses(const Batch& data) const;
  // Heartbeat, stop check and the wait for inference before a step.
  static Status BeforeStep(RoundHooks& hooks);

  // ---- round_promote.cc
  Result<GateOutcome> EvaluateAndGate(RoundState* rs, torch::jit::Module& candidate,
                                      const std::set<int64_t>& trained_classes);
  Status SaveAndPublish(RoundState* rs, torch::jit::Module& candidate, const GateOutcome& gate);

  const DistillerOptions& o_;
  std::unique_ptr<VersionStore> versions_;
  torch::jit::Module teacher_;  // a handle on options.teacher (forward is not const)
  torch::jit::Module active_;
  int64_t active_id_;
  std::mt19937_64 rng_;
  bool warned_recycle_ = false;
};

// State keys of the learner's progress through "incoming".
inline constexpr char kCursorKey[] = "learner/cursor";
inline constexpr char kSplitKey[] = "learner/split_upto";
// "<round id> <last sample id>" while a round that may have registered a
// version has not consumed its samples (round_recovery.h).
inline constexpr char kPendingKey[] = "learner/consuming";
// The persisted cursor (0 if none or unreadable).
storage::SampleId LoadCursor(storage::SampleStore& store);

}  // namespace distilld::learner::internal
