// See distiller.h. This file is the loop: the thread, the round queue
// shared by the API and the automatic triggers, back-off, progress and the
// record of each round. The round itself is a RoundRunner (round.h).
#include "learner/distiller.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "common/crash_point.h"
#include "common/enum_names.h"
#include "learner/round.h"
#include "learner/round_settings.h"

// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"
#include "common/thread_priority.h"

namespace distilld::learner {
namespace {

using internal::LoadCursor;
using internal::RoundRunner;
using internal::RoundState;

class DistillerImpl final : public IncrementalDistiller, private internal::RoundHooks {
 public:
  DistillerImpl(DistillerOptions o, std::unique_ptr<VersionStore> versions, torch::jit::Module active)
      : o_(std::move(o)), runner_(o_, std::move(versions), std::move(active), o_.active_version) {
    if (o_.clock == nullptr) o_.clock = Clock::Real();
    progress_.active_version = o_.active_version;
  }
  ~DistillerImpl() override { Stop(); }

  Status Start() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (thread_.joinable() || running_) return Status::FailedPrecondition("distiller already started");
    stop_ = false;
    running_ = true;
    progress_.state = LearnerState::kIdle;
    last_round_end_us_ = o_.clock->MonotonicMicros();
    thread_ = std::thread([this] { ThreadMain(); });
    return Status::Ok();
  }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
    progress_.state = LearnerState::kStopped;
  }

  Result<RoundRequest> RequestRound() override {
    // One request at a time, so two clients asking together share a round
    // instead of racing for the same samples.
    std::lock_guard<std::mutex> serial(request_mu_);
    // While a request is between counting and queueing, the thread starts no
    // automatic round: that round would take the samples just counted and
    // leave the queued one nothing.
    {
      std::unique_lock<std::mutex> lock(mu_);
      requesting_ = true;
      // An automatic round the thread is deciding on right now is queued
      // first, and joined below.
      cv_.wait(lock, [this] { return !triggering_ || stop_; });
    }
    struct Done {
      DistillerImpl* self;
      ~Done() {
        std::lock_guard<std::mutex> lock(self->mu_);
        self->requesting_ = false;
      }
    } done{this};
    for (int attempt = 0;; ++attempt) {
      storage::SampleId claimed;
      int64_t current;
      bool unread;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!running_ || stop_) return Status::FailedPrecondition("learner is not running");
        // A queued round reads whatever has arrived when it starts.
        if (!queue_.empty()) return RoundRequest{RoundRequest::Kind::kJoined, queue_.back().id, ""};
        claimed = claimed_upto_;
        current = current_round_;
        unread = current != 0 && !current_read_;
      }
      // Samples the running round already read are not new to a round
      // queued behind it.
      ASSIGN_OR_RETURN(uint64_t pending, o_.store->CountIncoming(std::max(LoadCursor(*o_.store), claimed)));
      std::unique_lock<std::mutex> lock(mu_);
      if (!running_ || stop_) return Status::FailedPrecondition("learner is not running");
      if (claimed_upto_ != claimed || current_round_ != current) {
        if (attempt < 3) continue;  // a round started meanwhile: count again
      }
      if (pending == 0) return NothingNew();
      // The running round has not read yet: it will read these too.
      if (unread) return RoundRequest{RoundRequest::Kind::kJoined, current, ""};
      lock.unlock();
      ASSIGN_OR_RETURN(int64_t id, o_.registry->BeginRound("api"));
      storage::RoundRecord queued;
      queued.id = id;
      queued.trigger = "api";
      queued.started_us = o_.clock->NowMicros();
      queued.outcome = storage::RoundOutcome::kQueued;
      RETURN_IF_ERROR(o_.registry->UpdateRound(queued).WithContext("queueing round " + std::to_string(id)));
      lock.lock();
      if (stop_) {
        // The thread may already have ended the queue's rounds: end this one
        // here rather than leave it queued until the next start.
        lock.unlock();
        queued.outcome = storage::RoundOutcome::kAborted;
        queued.reason = "the learner stopped before the round started";
        (void)o_.registry->UpdateRound(queued);
        return Status::FailedPrecondition("learner is not running");
      }
      queue_.push_back({id, "api"});
      progress_.queued_rounds = static_cast<int64_t>(queue_.size());
      lock.unlock();
      cv_.notify_all();
      return RoundRequest{RoundRequest::Kind::kQueued, id, ""};
    }
  }

  Result<storage::RoundRecord> RunRoundNow(const std::string& trigger) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (running_) return Status::FailedPrecondition("the learner thread is running");
    }
    ASSIGN_OR_RETURN(uint64_t pending, o_.store->CountIncoming(LoadCursor(*o_.store)));
    if (pending == 0) return Status::FailedPrecondition("no new samples");
    ASSIGN_OR_RETURN(int64_t id, o_.registry->BeginRound(trigger));
    return RunRound(id, trigger);
  }

  Status Reconfigure(const config::LearnerConfig& learner, const config::ReplayConfig& replay) override {
    RETURN_IF_ERROR(ValidateLearnerSettings(learner, replay));
    std::lock_guard<std::mutex> lock(mu_);
    o_.learner.trigger_count = learner.trigger_count;
    o_.learner.trigger_interval_s = learner.trigger_interval_s;
    o_.learner.min_samples = learner.min_samples;
    pending_ = Settings{learner, replay};
    return Status::Ok();
  }

  DistillerProgress Progress() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return progress_;
  }

 private:
  // ---- thread ----
  void ThreadMain() {
    at::set_num_threads(std::max(1, o_.learner.threads));
    // Only this thread (and the OpenMP workers it creates) runs lower.
    if (Status s = LowerCurrentThreadPriority(o_.learner.nice); !s.ok()) {
      LOG(kWarning) << "learner: " << s.ToString() << "; training at normal priority";
    }
    if (o_.learner.idle_priority) {
      if (Status s = MakeCurrentThreadIdlePriority(); !s.ok()) {
        LOG(kWarning) << "learner: " << s.ToString() << "; training under the normal policy";
      }
    }
    // Adam's moments of weights that never get a gradient (e.g. always-black
    // border pixels) decay into subnormal floats after a few hundred steps,
    // and subnormal arithmetic made the update ~5x slower in long rounds.
    // Flushing them to zero changes values below 1e-38 only. MXCSR is per
    // thread (and inherited by the OpenMP workers this thread starts), so
    // serving threads keep IEEE behaviour.
    const bool ftz = at::globalContext().setFlushDenormal(true);
    LOG(kInfo) << "learner: started (threads=" << o_.learner.threads << ", nice=" << o_.learner.nice
               << ", flush denormals " << (ftz ? "on" : "unsupported") << ")";
    bool ran = false;  // a round just ended: check again at once
    for (;;) {
      Beat();
      bool idle;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (!ran) {
          cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(10, o_.poll_interval_ms)),
                       [this] { return stop_ || !queue_.empty(); });
        }
        ran = false;
        if (stop_) break;
        // Automatic triggers feed the same queue as POST
        // /v1/learner/rounds, only while it is empty and no request is
        // counting: one consumer, one order. `triggering_` makes a request
        // that arrives meanwhile wait for this decision and join its round.
        idle = queue_.empty() && !requesting_ && o_.auto_trigger;
        triggering_ = idle;
      }
      if (idle) {
        const std::string trigger = CheckTriggers();
        int64_t id = 0;
        if (!trigger.empty()) {
          auto begun = o_.registry->BeginRound(trigger);
          if (begun.ok()) {
            id = *begun;
          } else {
            LOG(kError) << "learner: cannot begin round: " << begun.status().ToString();
            backoff_until_us_ = o_.clock->MonotonicMicros() + o_.error_backoff_s * 1'000'000;
          }
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (id != 0) queue_.push_back({id, trigger});
          triggering_ = false;
        }
        cv_.notify_all();
      }
      Queued next;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (queue_.empty()) continue;
        next = queue_.front();
        queue_.pop_front();
        current_round_ = next.id;
        claimed_upto_ = 0;
        current_read_ = false;
        progress_.queued_rounds = static_cast<int64_t>(queue_.size());
        progress_.state = LearnerState::kReading;
      }
      (void)RunRound(next.id, next.trigger);
      ran = true;
      std::lock_guard<std::mutex> lock(mu_);
      current_round_ = 0;
      claimed_upto_ = 0;
    }
    AbortQueued();
    LOG(kInfo) << "learner: stopped";
  }

  // CountIncoming iterates every pending sample (keys and values: 60,000
  // samples are ~190 MB), and this runs every poll_interval_ms; after a large
  // ingest that scan took ~9% of a core and doubled inference p99. Reuse
  // the count while neither the cursor nor the incoming family changed.
  Result<uint64_t> CountPending() {
    const storage::SampleId cursor = LoadCursor(*o_.store);
    const uint64_t generation = o_.store->incoming_generation();  // before counting: exact
    if (pending_cache_ && pending_cache_->cursor == cursor && pending_cache_->generation == generation) {
      return pending_cache_->count;
    }
    ASSIGN_OR_RETURN(uint64_t count, o_.store->CountIncoming(cursor));
    pending_cache_ = PendingCount{cursor, generation, count};
    return count;
  }

  std::string CheckTriggers() {
    int64_t now = o_.clock->MonotonicMicros();
    if (now < backoff_until_us_) return "";
    auto count = CountPending();
    if (!count.ok()) {
      LOG(kError) << "learner: counting incoming: " << count.status().ToString();
      backoff_until_us_ = now + o_.error_backoff_s * 1'000'000;
      return "";
    }
    if (*count == 0) return "";
    uint64_t trigger_count, min_samples;
    int64_t trigger_interval_s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      trigger_count = o_.learner.trigger_count;
      trigger_interval_s = o_.learner.trigger_interval_s;
      min_samples = o_.learner.min_samples;
    }
    if (trigger_count > 0 && *count >= trigger_count) return "count";
    if (trigger_interval_s > 0 && *count >= std::max<uint64_t>(1, min_samples) &&
        now - last_round_end_us_ >= trigger_interval_s * 1'000'000) {
      return "interval";
    }
    return "";
  }

  // ---- RoundHooks, and what the loop and they share ----
  void Beat() override {
    if (o_.on_heartbeat) o_.on_heartbeat();
  }

  // The answer when no sample waits that no round has taken. Called with mu_
  // held.
  RoundRequest NothingNew() const {
    RoundRequest r;
    r.kind = RoundRequest::Kind::kNothingNew;
    r.round_id = last_consumer_.round_id;
    if (last_consumer_.round_id == 0) {
      r.message = "no new samples to learn from: send samples with POST /v1/samples first";
      return r;
    }
    const std::string id = std::to_string(last_consumer_.round_id);
    r.message = "no new samples: round " + id + " (trigger " + last_consumer_.trigger +
                ") took every sample up to id " + std::to_string(last_consumer_.upto) +
                (current_round_ == last_consumer_.round_id ? " and is still running" : "") +
                "; poll GET /v1/learner/rounds/" + id;
    return r;
  }

  // Why a round found nothing to read, naming the round that took it.
  std::string SkipReason() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (last_consumer_.round_id == 0) return "no new samples";
    return "no new samples: round " + std::to_string(last_consumer_.round_id) + " (trigger " +
           last_consumer_.trigger + ") took them";
  }

  // After the thread has stopped: rounds still queued get a terminal outcome,
  // so a client polling one of them does not wait forever.
  void AbortQueued() {
    std::deque<Queued> left;
    {
      std::lock_guard<std::mutex> lock(mu_);
      left.swap(queue_);
      progress_.queued_rounds = 0;
    }
    for (const Queued& q : left) {
      Result<storage::RoundRecord> r = o_.registry->GetRound(q.id);
      storage::RoundRecord rec = r.ok() ? *r : storage::RoundRecord{};
      rec.id = q.id;
      rec.trigger = q.trigger;
      rec.outcome = storage::RoundOutcome::kAborted;
      rec.reason = "the learner stopped before the round started";
      rec.ended_us = o_.clock->NowMicros();
      if (Status st = o_.registry->UpdateRound(rec); !st.ok()) {
        LOG(kError) << "learner: recording queued round " << q.id << ": " << st.ToString();
      }
    }
  }

  // See DistillerOptions::inference_busy. Cancelled("stopped") if Stop() is
  // called while waiting.
  Status YieldToInference() override {
    if (!o_.inference_busy || o_.learner.max_yield_s <= 0) return Status::Ok();
    while (yielded_us_ < o_.learner.max_yield_s * 1'000'000 && o_.inference_busy()) {
      Beat();
      const auto t0 = std::chrono::steady_clock::now();
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return stop_; })) {
          return Status::Cancelled("stopped");
        }
      }
      yielded_us_ +=
          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
      std::lock_guard<std::mutex> lock(mu_);
      progress_.yielded_ms = yielded_us_ / 1000;
    }
    return Status::Ok();
  }

  void SetState(LearnerState state) override {
    std::lock_guard<std::mutex> lock(mu_);
    progress_.state = state;
  }

  // ---- round ----
  // Runs one round and writes its record: the round's settings are swapped
  // in first, its outcome and any error recorded last.
  Result<storage::RoundRecord> RunRound(int64_t round_id, const std::string& trigger) {
    RoundState rs;
    rs.record.id = round_id;
    rs.record.trigger = trigger;
    rs.record.started_us = o_.clock->NowMicros();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (pending_) {
        // The learner thread alone reads these outside mu_, so swapping them
        // here, between rounds, cannot tear a round's settings.
        const config::LearnerConfig started = o_.learner;
        o_.learner = pending_->learner;
        o_.learner.threads = started.threads;
        o_.learner.nice = started.nice;
        o_.learner.idle_priority = started.idle_priority;
        o_.learner.seed = started.seed;
        o_.learner.feature.method = started.feature.method;
        o_.replay.replay_ratio = pending_->replay.replay_ratio;
        pending_.reset();
      }
      progress_.round_id = round_id;
      current_trigger_ = trigger;
      progress_.step = 0;
      progress_.total_steps = 0;
      progress_.loss = 0;
      progress_.samples_per_s = 0;
      progress_.yielded_ms = 0;
    }
    yielded_us_ = 0;
    LOG(kInfo) << "learner: round " << round_id << " started (" << trigger << ")";
    // A queued round's record says "queued" until now.
    if (Status up = o_.registry->UpdateRound(rs.record); !up.ok()) {
      LOG(kError) << "learner: recording round " << round_id << " start: " << up.ToString();
    }
    Status st;
    try {
      st = runner_.Run(&rs, *this);
    } catch (const std::exception& e) {  // a LibTorch surprise must not kill the thread
      st = Status::Internal(std::string("round: ") + e.what());
    }
    if (!st.ok()) {
      const bool aborted = st.code() == StatusCode::kAborted || st.code() == StatusCode::kCancelled;
      rs.record.outcome = aborted ? storage::RoundOutcome::kAborted : storage::RoundOutcome::kFailed;
      rs.record.reason = st.message();
      LOG(kWarning) << "learner: round " << round_id << " " << storage::RoundOutcomeName(rs.record.outcome) << ": "
                    << st.message();
      (void)o_.registry->LogEvent(aborted ? storage::EventKind::kRoundAborted : storage::EventKind::kError,
                                  "round " + std::to_string(round_id) + ": " + st.message());
      if (!aborted) backoff_until_us_ = o_.clock->MonotonicMicros() + o_.error_backoff_s * 1'000'000;
    }
    if (!rs.record.ended_us) rs.record.ended_us = o_.clock->NowMicros();
    CrashPoint("round.consumed");
    if (Status up = o_.registry->UpdateRound(rs.record); !up.ok()) {
      LOG(kError) << "learner: recording round " << round_id << ": " << up.ToString();
    }
    if (rs.record.candidate_version.has_value()) {
      // A round that saved a version may have pushed an old one out.
      Result<RetentionReport> kept = ApplyRetentionAndRecord(*o_.registry, o_.state_dir, RetentionPolicyFrom(o_.learner),
                                                             "after round " + std::to_string(round_id));
      if (!kept.ok()) {
        LOG(kWarning) << "learner: version retention: " << kept.status().ToString();
      }
    }
    last_round_end_us_ = o_.clock->MonotonicMicros();
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_.state = running_ && !stop_ ? LearnerState::kIdle : LearnerState::kStopped;
      progress_.rounds_completed += 1;
      progress_.last_outcome = rs.record.outcome;
      progress_.last_reason = rs.record.reason;
      progress_.last_version = rs.record.candidate_version.value_or(0);
      progress_.active_version = runner_.active_id();
    }
    LOG(kInfo) << "learner: round " << round_id << " " << storage::RoundOutcomeName(rs.record.outcome)
               << (rs.record.reason.empty() ? "" : ": " + rs.record.reason);
    if (o_.on_round_end) o_.on_round_end(rs.record);
    return rs.record;
  }

  // ---- RoundHooks ----
  Status CheckStop() override {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_ ? Status::Cancelled("stopped") : Status::Ok();
  }
  void SetTotalSteps(int64_t total) override {
    std::lock_guard<std::mutex> lock(mu_);
    progress_.total_steps = total;
  }
  void ReportStep(int64_t step, double loss, double samples_per_s) override {
    std::lock_guard<std::mutex> lock(mu_);
    progress_.step = step;
    progress_.loss = loss;
    if (samples_per_s >= 0) progress_.samples_per_s = samples_per_s;
  }
  void MarkRead(storage::SampleId last_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    current_read_ = true;
    if (last_id == 0) return;
    claimed_upto_ = last_id;
    last_consumer_ = {progress_.round_id, current_trigger_, last_id};
  }

  DistillerOptions o_;
  // The models and training state; the learner thread's (or the RunRoundNow
  // caller's) only.
  RoundRunner runner_;
  struct PendingCount {
    storage::SampleId cursor;
    uint64_t generation;
    uint64_t count;
  };
  std::optional<PendingCount> pending_cache_;  // learner thread only
  int64_t yielded_us_ = 0;  // waited for inference in the current round; learner thread only
  int64_t last_round_end_us_ = 0;
  int64_t backoff_until_us_ = 0;

  struct Queued {
    int64_t id = 0;
    std::string trigger;
  };
  struct Consumer {
    int64_t round_id = 0;  // 0 = none since start
    std::string trigger;
    storage::SampleId upto = 0;
  };

  std::mutex request_mu_;  // serialises RequestRound
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool running_ = false;
  bool requesting_ = false;              // a RequestRound is counting and queueing
  bool triggering_ = false;              // the thread is deciding on an automatic round
  bool current_read_ = false;            // the running round has read its samples
  std::deque<Queued> queue_;             // rounds waiting, oldest first
  struct Settings {
    config::LearnerConfig learner;
    config::ReplayConfig replay;
  };
  std::optional<Settings> pending_;      // from Reconfigure, for the next round
  int64_t current_round_ = 0;            // running now (0 = none)
  storage::SampleId claimed_upto_ = 0;   // last id the running round read (0 = none yet)
  Consumer last_consumer_;               // the latest round that read samples
  std::string current_trigger_;          // of the round running now
  DistillerProgress progress_;
  std::thread thread_;
};

}  // namespace

namespace {

constexpr EnumNames<LearnerState, 8> kLearnerStateNames{{{LearnerState::kStopped, "stopped"},
                                                         {LearnerState::kIdle, "idle"},
                                                         {LearnerState::kReading, "reading"},
                                                         {LearnerState::kTeacher, "teacher"},
                                                         {LearnerState::kTraining, "training"},
                                                         {LearnerState::kEvaluating, "evaluating"},
                                                         {LearnerState::kSaving, "saving"},
                                                         {LearnerState::kConsuming, "consuming"}}};

}  // namespace

std::string_view LearnerStateName(LearnerState state) { return EnumName(kLearnerStateNames, state); }
Result<LearnerState> ParseLearnerState(std::string_view name) {
  return ParseEnum(kLearnerStateNames, name, "learner state");
}

Result<std::unique_ptr<IncrementalDistiller>> IncrementalDistiller::Create(DistillerOptions o) {
  if (o.store == nullptr || o.registry == nullptr || o.buffer == nullptr || o.holdout == nullptr) {
    return Status::InvalidArgument("distiller needs store, registry, buffer and holdout");
  }
  if (o.state_dir.empty()) return Status::InvalidArgument("distiller needs a state_dir");
  RETURN_IF_ERROR(ValidateLearnerSettings(o.learner, o.replay));
  if (!o.teacher.find_method("forward")) {
    return Status::InvalidArgument("distiller needs a teacher module with forward()");
  }
  ASSIGN_OR_RETURN(storage::VersionRecord active, o.registry->GetVersion(o.active_version));
  ASSIGN_OR_RETURN(std::unique_ptr<VersionStore> versions, VersionStore::Create({o.state_dir, o.registry, o.free_space}));
  ASSIGN_OR_RETURN(torch::jit::Module model, versions->Load(active));
  if (o.learner.recycle_dormant_units) {
    // Said once, at start: rounds then train such a student as it is.
    if (Status st = CheckRecyclable(model); !st.ok()) {
      LOG(kWarning) << "learner: dormant units of this student cannot be recycled (" << st.message()
                    << "); it is trained without recycling";
    }
  }
  return std::unique_ptr<IncrementalDistiller>(new DistillerImpl(std::move(o), std::move(versions), std::move(model)));
}

}  // namespace distilld::learner
