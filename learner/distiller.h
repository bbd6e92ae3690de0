// IncrementalDistiller: the background thread that turns new samples into
// better students, and the start-up helpers the daemon needs.
//
// A round (see distiller.cc for the order of durable writes):
//   1. read "incoming" after the persisted cursor (state key "learner/cursor");
//   2. run the teacher once for samples lacking logits and store them back;
//   3. split off the held-out share (HoldoutSet::Split), delete those records
//      from "incoming";
//   4. mix the remaining new samples with replay_ratio * n buffer samples;
//   5. train a deep copy of the active student (warm start) with the KD loss;
//      a NaN/inf loss aborts the round (no version is written);
//   6. evaluate candidate and active on the holdout and gate (below);
//   7. save and register it through the VersionStore (candidate or rejected,
//      with metrics JSON and reason); on pass Publish() then Activate();
//   8. offer the new training samples to the replay buffer, advance the
//      cursor and delete the consumed incoming records.
// Rejected and NaN-aborted rounds still consume their samples (they enter the
// replay buffer), so a bad batch cannot make the learner retry forever. A
// round stopped by Stop() or failed by an I/O error consumes nothing.
//
// Gate (learner/gate.h): candidate and active are evaluated on the same
// held-out set, old knowledge in the active version's own label space (the
// classes its lineage was trained on, recorded in each version's metrics as
// "label_space"; inferred from the held-out set for an initial student
// distilld did not train). Every check, with its value, threshold and
// verdict, goes into the round's evaluation JSON and the version's metrics.
// With no labelled held-out samples, agreement with the teacher on the
// round's new samples is judged instead.
//
// Rounds: POST /v1/learner/rounds (RequestRound) and the automatic triggers
// feed one FIFO queue of round ids, consumed by the one learner thread. Every
// id reaches a terminal outcome: promoted, rejected, aborted, failed, or
// skipped (its samples were taken by an earlier round). Queued rounds that
// never started when the learner stops end "aborted".
//
// Threads: Start() launches one std::thread that owns every model and all
// training state; it sets at::set_num_threads(threads) and its nice value.
// RequestRound(), Progress() and Stop() may be called from any thread.
// The distiller does not own the store, registry, buffer, holdout, publisher
// or clock; they must outlive it.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "config/config.h"
#include "learner/augment.h"
#include "learner/gate.h"
#include "learner/kd_loss.h"
#include "learner/model/arch.h"
#include "learner/publisher.h"
#include "learner/recycle.h"
#include "learner/version_store.h"
#include "replaybuffer/replay_buffer.h"
#include "storage/registry.h"
#include "storage/sample_store.h"

namespace distilld::learner {

struct DistillerOptions {
  // The learner's and the replay's settings, as configured (config/config.h
  // documents each field and its default). The distiller reads the training
  // and gate fields when a round starts, the triggers at every check, and
  // threads, nice, idle_priority and seed once, when its thread starts.
  // `learner.enabled` and `learner.yield_above_rps` are the daemon's (see
  // auto_trigger and inference_busy); of `replay`, only replay_ratio is read
  // here (the buffer and holdout are sized by whoever opens them).
  config::LearnerConfig learner;
  config::ReplayConfig replay;
  // Count and interval triggers on. Off in tools and tests that start every
  // round themselves.
  bool auto_trigger = true;
  // Optional: true while inference is busy (the daemon derives it from the
  // request rate, learner.yield_above_rps). Before each teacher chunk and
  // training step the learner waits while it returns true, so under a load
  // that saturates the cores training does not take time from requests;
  // after learner.max_yield_s of waiting in one round it goes on regardless,
  // so a round under permanent load is late, not lost. Called on the learner
  // thread only.
  std::function<bool()> inference_busy;
  // Replayed samples are shown as shifted views (learner.replay_shift_px),
  // redrawn every epoch and labelled afresh by the teacher; recycling
  // (learner.recycle_dormant_units) re-draws dormant units of the student
  // before each round: see learner/augment.h and learner/recycle.h.
  // --- Distiller-only. ---
  std::string state_dir;             // models/ lives here; required
  size_t max_round_samples = 100000;  // new samples read per round at most
  int64_t teacher_batch_size = 256;  // teacher forward chunk (also eval)
  int64_t poll_interval_ms = 250;    // how often the thread checks triggers
  int64_t error_backoff_s = 30;      // no automatic round this long after a failed one

  // Not owned; all required except publisher (null = register/activate only)
  // and clock (null = Clock::Real()).
  storage::SampleStore* store = nullptr;
  storage::Registry* registry = nullptr;
  // Optional: version saves are refused below it (VersionStore::Options).
  const storage::FreeSpaceFloor* free_space = nullptr;
  replaybuffer::ReplayBuffer* buffer = nullptr;
  replaybuffer::HoldoutSet* holdout = nullptr;
  VersionPublisher* publisher = nullptr;
  Clock* clock = nullptr;
  // The teacher (shared handle; the distiller only runs it forward, in its
  // own thread). Required.
  torch::jit::Module teacher;
  // Called on the learner thread after every round with its final record
  // (outcome set, ended_us set), for metrics. Must not block. Optional.
  std::function<void(const storage::RoundRecord&)> on_round_end;
  // Called on the learner thread at every poll (poll_interval_ms while idle),
  // every training step and every teacher chunk: a liveness signal for the
  // systemd watchdog (Heartbeat::Beat, common/heartbeat.h). Must be fast. Optional.
  std::function<void()> on_heartbeat;
  // Active version at start; the thread re-reads the registry before every
  // round, so an activation made elsewhere (rollback) is picked up.
  int64_t active_version = 0;
};

// What the learner thread is doing; GET /v1/learner shows the name.
enum class LearnerState {
  kStopped,     // no thread
  kIdle,        // waiting for a trigger or a request
  kReading,     // a round reads its new samples
  kTeacher,     // ... labels them with the teacher
  kTraining,    // ... trains the candidate
  kEvaluating,  // ... evaluates it and applies the gate
  kSaving,      // ... saves, registers and publishes it
  kConsuming,   // ... offers the samples to the buffer and advances the cursor
};
std::string_view LearnerStateName(LearnerState state);  // "stopped", "idle", "reading", ...
Result<LearnerState> ParseLearnerState(std::string_view name);

struct DistillerProgress {
  LearnerState state = LearnerState::kStopped;
  int64_t round_id = 0;      // current round, or last one when idle
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0.0;         // latest step's loss
  double samples_per_s = 0.0;  // training throughput of the current/last round
  int64_t yielded_ms = 0;      // time the current/last round waited for inference (inference_busy)
  int64_t rounds_completed = 0;
  std::optional<storage::RoundOutcome> last_outcome;  // of the last round (none yet: nullopt)
  std::string last_reason;
  int64_t last_version = 0;  // version produced by the last round (0 = none)
  int64_t active_version = 0;
  int64_t queued_rounds = 0;  // waiting behind the current one
};

struct RoundRequest {
  enum class Kind {
    kQueued,     // a new round was queued; poll round_id
    kJoined,     // a round queued earlier, or one that started but has not
                 // read its samples yet, will take them; poll round_id
    kNothingNew  // no samples wait that no round has taken; round_id is the
                 // round that took the latest ones (0 = none ever)
  };
  Kind kind = Kind::kQueued;
  int64_t round_id = 0;
  std::string message;  // for kNothingNew: why, and what to poll
};

class IncrementalDistiller {
 public:
  // Validates options and loads the active version's model (checksum
  // checked). Does not start the thread.
  static Result<std::unique_ptr<IncrementalDistiller>> Create(DistillerOptions options);
  // Stops the thread if running.
  virtual ~IncrementalDistiller() = default;

  // Launches the thread. FailedPrecondition if already started.
  virtual Status Start() = 0;
  // Asks the thread to stop at the next step boundary and joins it (about one
  // second at most). A round in progress ends "aborted" and writes no version.
  // Idempotent.
  virtual void Stop() = 0;
  // Asks for a round now (trigger "api"); see RoundRequest. Errors:
  // FailedPrecondition if the thread is not running; the registry's error if
  // the round cannot be recorded.
  virtual Result<RoundRequest> RequestRound() = 0;
  // Runs one round in the caller's thread (tools, benchmarks, tests) and
  // returns its record. FailedPrecondition while the thread is running.
  virtual Result<storage::RoundRecord> RunRoundNow(const std::string& trigger) = 0;
  // Snapshot, any thread, any time.
  virtual DistillerProgress Progress() const = 0;
  // New settings (config reload): the triggers take effect at the next
  // check, the training and gate fields when the next round starts (a round
  // in progress finishes with the old ones). Fields read only at start
  // (threads, nice, idle_priority, seed, feature.method) keep their running
  // values. InvalidArgument, changing nothing, if a value is out of range.
  // Any thread.
  virtual Status Reconfigure(const config::LearnerConfig& learner, const config::ReplayConfig& replay) = 0;
};

}  // namespace distilld::learner
