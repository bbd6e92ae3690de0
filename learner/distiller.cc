// See distiller.h for the round and the gate.
#include "learner/distiller.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"
#include "common/thread_priority.h"
#include "learner/evaluate.h"
#include "learner/label_space.h"
#include "learner/model/model_io.h"
#include "learner/round_settings.h"
#include "learner/train_step.h"

namespace distilld::learner {

namespace {

constexpr char kCursorKey[] = "learner/cursor";
constexpr char kSplitKey[] = "learner/split_upto";

std::string EncodeU64(uint64_t v) { return std::to_string(v); }
uint64_t DecodeU64(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }

// Everything a round produces for the registry.
struct RoundState {
  storage::RoundRecord record;
  std::vector<storage::SampleId> consumed;  // incoming ids read this round
  storage::SampleId last_id = 0;
  std::vector<storage::Sample> train_new;   // new samples used for training
};

class DistillerImpl final : public IncrementalDistiller {
 public:
  DistillerImpl(DistillerOptions o, std::unique_ptr<VersionStore> versions, torch::jit::Module active)
      : o_(std::move(o)), versions_(std::move(versions)), active_(std::move(active)), active_id_(o_.active_version), rng_(o_.learner.seed) {
    if (o_.clock == nullptr) o_.clock = Clock::Real();
    progress_.active_version = active_id_;
  }
  ~DistillerImpl() override { Stop(); }

  Status Start() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (thread_.joinable() || running_) return Status::FailedPrecondition("distiller already started");
    stop_ = false;
    running_ = true;
    progress_.state = "idle";
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
    progress_.state = "stopped";
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
      ASSIGN_OR_RETURN(uint64_t pending, o_.store->CountIncoming(std::max(LoadCursor(), claimed)));
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
      queued.outcome = "queued";
      RETURN_IF_ERROR(o_.registry->UpdateRound(queued).WithContext("queueing round " + std::to_string(id)));
      lock.lock();
      if (stop_) {
        // The thread may already have ended the queue's rounds: end this one
        // here rather than leave it queued until the next start.
        lock.unlock();
        queued.outcome = "aborted";
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
    ASSIGN_OR_RETURN(uint64_t pending, o_.store->CountIncoming(LoadCursor()));
    if (pending == 0) return Status::FailedPrecondition("no new samples");
    ASSIGN_OR_RETURN(int64_t id, o_.registry->BeginRound(trigger));
    return RunRound(id, trigger);
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
        progress_.state = "reading";
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
    const storage::SampleId cursor = LoadCursor();
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

 public:
  Status Reconfigure(const config::LearnerConfig& learner, const config::ReplayConfig& replay) override {
    RETURN_IF_ERROR(ValidateLearnerSettings(learner, replay));
    std::lock_guard<std::mutex> lock(mu_);
    o_.learner.trigger_count = learner.trigger_count;
    o_.learner.trigger_interval_s = learner.trigger_interval_s;
    o_.learner.min_samples = learner.min_samples;
    pending_ = Settings{learner, replay};
    return Status::Ok();
  }

 private:

  void Beat() {
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
  std::string SkipReason() {
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
      rec.outcome = "aborted";
      rec.reason = "the learner stopped before the round started";
      rec.ended_us = o_.clock->NowMicros();
      if (Status st = o_.registry->UpdateRound(rec); !st.ok()) {
        LOG(kError) << "learner: recording queued round " << q.id << ": " << st.ToString();
      }
    }
  }

  bool StopRequested() {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_;
  }

  // See DistillerOptions::inference_busy. Cancelled("stopped") if Stop() is
  // called while waiting.
  Status YieldToInference() {
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

  void SetState(const std::string& state) {
    std::lock_guard<std::mutex> lock(mu_);
    progress_.state = state;
  }

  storage::SampleId LoadCursor() {
    auto v = o_.store->Get(storage::Family::kState, kCursorKey);
    if (!v.ok() || !v->has_value()) return 0;
    return DecodeU64(**v);
  }
  storage::SampleId LoadSplitUpto() {
    auto v = o_.store->Get(storage::Family::kState, kSplitKey);
    if (!v.ok() || !v->has_value()) return 0;
    return DecodeU64(**v);
  }

  // ---- round ----
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
        const config::LearnerConfig& next = pending_->learner;
        config::LearnerConfig& l = o_.learner;
        const config::LearnerConfig started = l;
        l = next;
        l.threads = started.threads;
        l.nice = started.nice;
        l.idle_priority = started.idle_priority;
        l.seed = started.seed;
        l.feature.method = started.feature.method;
        o_.replay.replay_ratio = pending_->replay.replay_ratio;
        pending_.reset();
      }
      progress_.round_id = round_id;
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
      st = DoRound(&rs);
    } catch (const std::exception& e) {  // a LibTorch surprise must not kill the thread
      st = Status::Internal(std::string("round: ") + e.what());
    }
    if (!st.ok()) {
      rs.record.outcome =
          st.code() == StatusCode::kAborted || st.code() == StatusCode::kCancelled ? "aborted" : "failed";
      rs.record.reason = st.message();
      LOG(kWarning) << "learner: round " << round_id << " " << rs.record.outcome << ": " << st.message();
      (void)o_.registry->LogEvent(rs.record.outcome == "aborted" ? "round_aborted" : "error",
                                  "round " + std::to_string(round_id) + ": " + st.message());
      if (rs.record.outcome == "failed") {
        backoff_until_us_ = o_.clock->MonotonicMicros() + o_.error_backoff_s * 1'000'000;
      }
    }
    if (!rs.record.ended_us) rs.record.ended_us = o_.clock->NowMicros();
    Status up = o_.registry->UpdateRound(rs.record);
    if (!up.ok()) {
      LOG(kError) << "learner: recording round " << round_id << ": " << up.ToString();
    }
    last_round_end_us_ = o_.clock->MonotonicMicros();
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_.state = running_ && !stop_ ? "idle" : "stopped";
      progress_.rounds_completed += 1;
      progress_.last_outcome = rs.record.outcome;
      progress_.last_reason = rs.record.reason;
      progress_.last_version = rs.record.candidate_version.value_or(0);
      progress_.active_version = active_id_;
    }
    LOG(kInfo) << "learner: round " << round_id << " " << rs.record.outcome
               << (rs.record.reason.empty() ? "" : ": " + rs.record.reason);
    if (o_.on_round_end) o_.on_round_end(rs.record);
    return rs.record;
  }

  Status SyncActive() {
    ASSIGN_OR_RETURN(std::optional<storage::VersionRecord> active, o_.registry->ActiveVersion());
    if (!active.has_value()) return Status::FailedPrecondition("no active version in the registry");
    if (active->id == active_id_) return Status::Ok();
    ASSIGN_OR_RETURN(active_, versions_->Load(*active));
    LOG(kInfo) << "learner: active version is now " << active->id << " (changed outside the learner)";
    active_id_ = active->id;
    return Status::Ok();
  }

  // Teacher logits for samples lacking them; returns how many were computed.
  Result<size_t> AttachTeacherLogits(std::vector<storage::Sample*>& samples) {
    std::vector<storage::Sample*> missing;
    for (auto* s : samples) {
      if (s->teacher_logits.empty()) missing.push_back(s);
    }
    const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, o_.teacher_batch_size));
    for (size_t i = 0; i < missing.size(); i += chunk) {
      Beat();
      if (StopRequested()) return Status::Cancelled("stopped");
      RETURN_IF_ERROR(YieldToInference());
      std::vector<storage::Sample> part;
      for (size_t j = i; j < std::min(missing.size(), i + chunk); ++j) part.push_back(*missing[j]);
      ASSIGN_OR_RETURN(torch::Tensor inputs, SamplesToInputs(part));
      ASSIGN_OR_RETURN(torch::Tensor logits, ForwardInBatches(o_.teacher, inputs, static_cast<int64_t>(chunk)));
      logits = logits.contiguous();
      const int64_t width = logits.size(1);
      const float* p = logits.data_ptr<float>();
      for (size_t j = 0; j < part.size(); ++j) {
        missing[i + j]->teacher_logits.assign(p + static_cast<int64_t>(j) * width,
                                              p + static_cast<int64_t>(j + 1) * width);
      }
    }
    return missing.size();
  }

  Status DoRound(RoundState* rs) {
    RETURN_IF_ERROR(SyncActive());
    const storage::SampleId cursor = LoadCursor();
    ASSIGN_OR_RETURN(std::vector<storage::StoredSample> incoming,
                     o_.store->ReadIncoming(cursor, o_.max_round_samples));
    {
      std::lock_guard<std::mutex> lock(mu_);
      current_read_ = true;
    }
    if (incoming.empty()) {
      // Queued behind a round that took the samples: nothing to do, and not
      // an error (no back-off).
      rs->record.outcome = "skipped";
      rs->record.reason = SkipReason();
      return Status::Ok();
    }
    for (const auto& s : incoming) rs->consumed.push_back(s.id);
    rs->last_id = incoming.back().id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      claimed_upto_ = rs->last_id;
      last_consumer_ = {rs->record.id, rs->record.trigger, rs->last_id};
    }
    rs->record.samples_new = static_cast<int64_t>(incoming.size());

    // 2. Teacher logits once per sample, stored with it.
    SetState("teacher");
    {
      std::vector<storage::Sample*> ptrs;
      for (auto& s : incoming) ptrs.push_back(&s.sample);
      ASSIGN_OR_RETURN(size_t computed, AttachTeacherLogits(ptrs));
      if (computed > 0) {
        std::vector<storage::Mutation> m;
        for (const auto& s : incoming) {
          ASSIGN_OR_RETURN(std::string enc, storage::EncodeSample(s.sample));
          m.push_back({storage::Family::kIncoming, storage::SampleStore::IncomingKey(s.id), std::move(enc)});
        }
        RETURN_IF_ERROR(o_.store->Apply(m).WithContext("storing teacher logits"));
      }
    }
    if (StopRequested()) return Status::Cancelled("stopped");

    // 3. Held-out share. Samples already split by an earlier, interrupted
    // round (id <= split_upto) are not split again.
    const storage::SampleId split_upto = LoadSplitUpto();
    std::vector<storage::Sample> to_split;
    std::vector<size_t> split_index;
    for (size_t i = 0; i < incoming.size(); ++i) {
      if (incoming[i].id > split_upto) {
        to_split.push_back(incoming[i].sample);
        split_index.push_back(i);
      } else {
        rs->train_new.push_back(incoming[i].sample);
      }
    }
    if (!to_split.empty()) {
      // One atomic write holds the held-out samples, their deletion from
      // "incoming" and the split marker: after a crash a sample is either
      // held out or still trainable, never both.
      const storage::SampleId last_id = rs->last_id;
      auto also = [&](const std::vector<bool>& held) {
        std::vector<storage::Mutation> m;
        for (size_t j = 0; j < held.size(); ++j) {
          if (held[j]) {
            m.push_back({storage::Family::kIncoming,
                         storage::SampleStore::IncomingKey(incoming[split_index[j]].id), std::nullopt});
          }
        }
        m.push_back({storage::Family::kState, kSplitKey, EncodeU64(last_id)});
        return m;
      };
      std::vector<storage::Sample> copy = to_split;
      ASSIGN_OR_RETURN(std::vector<storage::Sample> kept, o_.holdout->Split(std::move(copy), also));
      for (auto& s : kept) rs->train_new.push_back(std::move(s));
    }
    if (StopRequested()) return Status::Cancelled("stopped");

    // 4. Replay mix.
    std::vector<storage::Sample> replay;
    if (o_.replay.replay_ratio > 0 && !rs->train_new.empty()) {
      size_t n = static_cast<size_t>(std::llround(o_.replay.replay_ratio * static_cast<double>(rs->train_new.size())));
      // A buffer smaller than the request is drawn again (each draw without
      // replacement), so the ratio of old to new holds in every round.
      while (replay.size() < n) {
        ASSIGN_OR_RETURN(std::vector<storage::Sample> part, o_.buffer->Sample(n - replay.size(), rng_));
        if (part.empty()) break;
        for (auto& s : part) replay.push_back(std::move(s));
      }
      std::vector<storage::Sample*> ptrs;
      for (auto& s : replay) ptrs.push_back(&s);
      ASSIGN_OR_RETURN(size_t unused, AttachTeacherLogits(ptrs));
      (void)unused;
    }
    rs->record.samples_replay = static_cast<int64_t>(replay.size());

    // 5-7. Train, evaluate, gate, save, register, publish.
    if (!rs->train_new.empty()) {
      Status trained = TrainEvaluatePromote(rs, replay);
      if (trained.code() == StatusCode::kAborted) {
        // A diverging loss: the active version stays, the samples are consumed.
        rs->record.outcome = "aborted";
        rs->record.reason = trained.message();
        (void)o_.registry->LogEvent("round_aborted", "round " + std::to_string(rs->record.id) + ": " +
                                                         trained.message());
      } else if (!trained.ok()) {
        return trained;
      }
    } else {
      rs->record.outcome = "rejected";
      rs->record.reason = "every new sample went to the holdout";
    }

    // 8. Consume: replay buffer, cursor, delete incoming.
    // The offer, the cursor and the deletion of the consumed samples are one
    // atomic write, so a crash never offers the same samples twice.
    SetState("consuming");
    std::vector<storage::Mutation> m;
    for (storage::SampleId id : rs->consumed) {
      m.push_back({storage::Family::kIncoming, storage::SampleStore::IncomingKey(id), std::nullopt});
    }
    m.push_back({storage::Family::kState, kCursorKey, EncodeU64(rs->last_id)});
    if (!rs->train_new.empty()) {
      Status offered = o_.buffer->Offer(rs->train_new, rng_, m);
      if (offered.ok()) return Status::Ok();
      // The buffer refused the samples (e.g. one the policy cannot file); the
      // round's work stands, so the cursor still advances without them.
      LOG(kError) << "learner: replay buffer offer failed: " << offered.ToString();
    }
    RETURN_IF_ERROR(o_.store->Apply(m).WithContext("advancing the learner cursor"));
    return Status::Ok();
  }

  // New samples, then replayed ones, as one Batch. Built in chunks with a
  // YieldToInference() between them: at 100,000 samples the whole conversion
  // takes about two seconds, too long to run in one piece under load.
  Result<Batch> AssembleTrainingData(const std::vector<storage::Sample>& fresh,
                                     const std::vector<storage::Sample>& replay) {
    constexpr size_t kChunk = 4096;
    std::vector<torch::Tensor> inputs, labels, logits;
    for (const std::vector<storage::Sample>* part : {&fresh, &replay}) {
      for (size_t i = 0; i < part->size(); i += kChunk) {
        RETURN_IF_ERROR(YieldToInference());
        if (StopRequested()) return Status::Cancelled("stopped");
        ASSIGN_OR_RETURN(Batch b, SamplesToBatch(std::span<const storage::Sample>(part->data() + i,
                                                                                 std::min(kChunk, part->size() - i))));
        inputs.push_back(b.inputs);
        labels.push_back(b.labels);
        if (b.teacher_logits.defined()) logits.push_back(b.teacher_logits);
      }
    }
    if (!logits.empty() && logits.size() != inputs.size()) {
      return Status::InvalidArgument("only some samples carry teacher logits");
    }
    // SamplesToBatch checks within a chunk; torch::cat would throw across them.
    for (size_t i = 1; i < inputs.size(); ++i) {
      if (inputs[i].sizes().slice(1) != inputs[0].sizes().slice(1)) {
        return Status::InvalidArgument("samples of different shapes in one round");
      }
      if (!logits.empty() && logits[i].size(1) != logits[0].size(1)) {
        return Status::InvalidArgument("teacher logit widths differ");
      }
    }
    Batch data;
    data.inputs = inputs.size() == 1 ? inputs[0] : torch::cat(inputs);
    data.labels = labels.size() == 1 ? labels[0] : torch::cat(labels);
    if (!logits.empty()) data.teacher_logits = logits.size() == 1 ? logits[0] : torch::cat(logits);
    return data;
  }

  // Rows [first, n) of `data` become fresh augmented views of `originals`
  // with the teacher's logits on them (see DistillerOptions::replay_augment).
  Status RefreshReplayViews(Batch& data, int64_t first, const torch::Tensor& originals) {
    ASSIGN_OR_RETURN(torch::Tensor views, AugmentImages(originals, ReplayAugment(o_.learner), rng_));
    const int64_t m = views.size(0);
    const int64_t chunk = std::max<int64_t>(1, o_.teacher_batch_size);
    try {
      data.inputs.narrow(0, first, m).copy_(views);
      for (int64_t i = 0; i < m; i += chunk) {
        Beat();
        if (StopRequested()) return Status::Cancelled("stopped");
        RETURN_IF_ERROR(YieldToInference());
        const int64_t len = std::min(chunk, m - i);
        ASSIGN_OR_RETURN(torch::Tensor logits, ForwardInBatches(o_.teacher, views.narrow(0, i, len), chunk));
        data.teacher_logits.narrow(0, first + i, len).copy_(logits);
      }
    } catch (const c10::Error& e) {
      return Status::Internal(std::string("replay views: ") + e.what_without_backtrace());
    }
    return Status::Ok();
  }

  // Step `step`'s mini-batch: consecutive slices of `order`, reshuffled at
  // the start of every epoch; first a heartbeat, a stop check and the wait
  // for inference.
  Result<Batch> NextMiniBatch(const Batch& data, std::vector<int64_t>& order, int64_t step, int64_t bs) {
    Beat();
    if (StopRequested()) return Status::Cancelled("stopped");
    RETURN_IF_ERROR(YieldToInference());
    const int64_t n = data.size();
    const int64_t pos = (step % ((n + bs - 1) / bs)) * bs;
    if (pos == 0) std::shuffle(order.begin(), order.end(), rng_);
    const int64_t end = std::min(n, pos + bs);
    torch::Tensor idx = torch::from_blob(order.data() + pos, {end - pos}, torch::kInt64);
    Batch b;
    b.inputs = data.inputs.index_select(0, idx);
    b.labels = data.labels.index_select(0, idx);
    b.teacher_logits = data.teacher_logits.index_select(0, idx);
    return b;
  }

  // See DistillerOptions::balanced_finetune_epochs. Returns the steps run.
  Result<int64_t> BalancedFinetune(RoundState* rs, torch::jit::Module& candidate, StepOptions so,
                                   const TemperatureScheduleOptions& sched, int64_t main_steps) {
    const replaybuffer::BufferStats stats = o_.buffer->Stats();
    if (stats.size == 0) return int64_t{0};
    ASSIGN_OR_RETURN(std::vector<storage::Sample> set, o_.buffer->Sample(stats.size, rng_));
    std::map<int64_t, std::vector<const storage::Sample*>> fresh;
    for (const auto& s : rs->train_new) {
      if (s.label) fresh[*s.label].push_back(&s);
    }
    uint64_t labelled = 0, classes = 0;
    for (const auto& [cls, count] : stats.class_counts) {
      if (cls < 0 || count == 0) continue;
      labelled += count;
      ++classes;
    }
    const size_t per_class = classes > 0 ? std::max<size_t>(1, labelled / classes) : 1;
    for (auto& [cls, list] : fresh) {
      std::shuffle(list.begin(), list.end(), rng_);
      for (size_t i = 0; i < std::min(per_class, list.size()); ++i) set.push_back(*list[i]);
    }
    std::vector<storage::Sample*> ptrs;
    for (auto& s : set) ptrs.push_back(&s);
    ASSIGN_OR_RETURN(size_t unused, AttachTeacherLogits(ptrs));
    (void)unused;
    ASSIGN_OR_RETURN(Batch data, SamplesToBatch(set));
    std::vector<torch::Tensor> params;
    for (const auto& p : candidate.parameters()) params.push_back(p);
    ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::Optimizer> opt,
                     MakeOptimizer(o_.learner.optimizer, o_.learner.learning_rate * o_.learner.balanced_finetune_lr_scale, std::move(params)));
    const int64_t n = data.size();
    const int64_t bs = std::max(1, o_.learner.batch_size);
    const int64_t per_epoch = (n + bs - 1) / bs;
    const int64_t total = per_epoch * o_.learner.balanced_finetune_epochs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_.total_steps = main_steps + total;
    }
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    so.loss.temperature = TemperatureAt(sched, main_steps, main_steps);  // where the main pass ended
    for (int64_t step = 0; step < total; ++step) {
      ASSIGN_OR_RETURN(Batch b, NextMiniBatch(data, order, step, bs));
      ASSIGN_OR_RETURN(StepStats st, TrainStep(candidate, *opt, b, so));
      std::lock_guard<std::mutex> lock(mu_);
      progress_.step = main_steps + step + 1;
      progress_.loss = st.loss;
    }
    return total;
  }

  // Classes the round trains on with at least gate.min_class_samples
  // labelled rows (new and replayed); they join the candidate's label space.
  // Unlabelled rows do not count: the teacher's argmax names classes the
  // student has barely seen (a few pullovers it calls coats), and a label
  // space holding them brings back the inflated scores the gate avoids
  // (measured on the demo: every round after the first rejected).
  std::set<int64_t> TrainedClasses(const Batch& data) const {
    std::set<int64_t> out;
    if (!data.labels.defined() || data.labels.numel() == 0) return out;
    torch::Tensor cls = data.labels.to(torch::kInt64);
    cls = cls.masked_select(cls >= 0);
    if (cls.numel() == 0) return out;
    torch::Tensor counts = torch::bincount(cls);
    auto c = counts.accessor<int64_t, 1>();
    for (int64_t k = 0; k < counts.size(0); ++k) {
      if (c[k] >= o_.learner.min_class_samples) out.insert(k);
    }
    return out;
  }

  struct GateOutcome {
    GateDecision decision;
    std::string json;     // the round's evaluation and the version's metrics
    std::string summary;  // one line for the promotion event
  };

  // Evaluates candidate and active on the held-out set (old knowledge among
  // the active's classes) and applies the gate. The active's label space is
  // its recorded one, or for a version distilld did not train, what it
  // evidently classifies on the held-out set.
  Result<GateOutcome> EvaluateAndGate(RoundState* rs, torch::jit::Module& candidate,
                                      const std::set<int64_t>& trained_classes) {
    ASSIGN_OR_RETURN(std::vector<storage::Sample> held, o_.holdout->All());
    const uint64_t holdout_generation = o_.holdout->generation();
    ASSIGN_OR_RETURN(storage::VersionRecord active_rec, o_.registry->GetVersion(active_id_));
    std::optional<std::set<int64_t>> recorded = LabelSpaceFromMetrics(active_rec.metrics_json);
    std::set<int64_t> active_space;
    if (recorded) {
      active_space = *recorded;
    } else {
      ASSIGN_OR_RETURN(EvalResult plain, EvaluateSamples(active_, held, o_.teacher_batch_size));
      active_space = InferLabelSpace(plain, GateOptionsFrom(o_.learner));
    }
    GateInput in;
    in.old_classes = active_space;
    std::vector<SampleOutcome> cand_out, act_out;
    ASSIGN_OR_RETURN(in.candidate,
                     EvaluateSamples(candidate, held, o_.teacher_batch_size, active_space, &cand_out));
    ASSIGN_OR_RETURN(in.active, EvaluateSamples(active_, held, o_.teacher_batch_size, active_space, &act_out));
    in.paired = Pair(cand_out, act_out, active_space);
    if (in.candidate.labelled == 0) {
      // No labelled holdout yet: agreement with the teacher on this round's
      // new samples (they all carry teacher logits by now).
      in.teacher_basis = true;
      in.paired = PairedEval{};
      ASSIGN_OR_RETURN(in.candidate, EvaluateSamples(candidate, rs->train_new, o_.teacher_batch_size));
      ASSIGN_OR_RETURN(in.active, EvaluateSamples(active_, rs->train_new, o_.teacher_batch_size));
    }
    GateOutcome out;
    out.decision = DecidePromotion(in, GateOptionsFrom(o_.learner));
    std::set<int64_t> candidate_space = active_space;
    candidate_space.insert(trained_classes.begin(), trained_classes.end());
    std::ostringstream js;
    js << "{\"basis\":\"" << out.decision.basis << "\",\"candidate\":" << in.candidate.ToJson()
       << ",\"active\":" << in.active.ToJson() << ",\"active_version\":" << active_id_
       << ",\"label_space\":" << LabelSpaceJson(candidate_space)
       << ",\"active_label_space\":" << LabelSpaceJson(active_space) << ",\"active_label_space_source\":\""
       << (recorded ? "recorded" : "inferred") << "\",\"holdout\":{\"size\":" << held.size()
       << ",\"generation\":" << holdout_generation << "},\"gate\":" << out.decision.ToJson() << "}";
    out.json = js.str();
    std::ostringstream line;
    line.precision(4);
    if (in.teacher_basis) {
      line << "teacher agreement " << in.candidate.agreement() << " vs " << in.active.agreement();
    } else {
      line << "held-out accuracy " << in.candidate.accuracy() << " vs " << in.active.accuracy();
    }
    out.summary = line.str();
    return out;
  }

  Status TrainEvaluatePromote(RoundState* rs, const std::vector<storage::Sample>& replay) {
    SetState("training");
    ASSIGN_OR_RETURN(Batch data, AssembleTrainingData(rs->train_new, replay));
    const std::set<int64_t> trained_classes = TrainedClasses(data);
    const int64_t n = data.size();
    const int64_t bs = std::max(1, o_.learner.batch_size);
    const int64_t per_epoch = (n + bs - 1) / bs;
    int64_t total = per_epoch * std::max(1, o_.learner.epochs);
    if (o_.learner.max_steps > 0) total = std::min(total, o_.learner.max_steps);

    ASSIGN_OR_RETURN(torch::jit::Module candidate, CloneForTraining(active_));
    int64_t recycled = 0;
    if (o_.learner.recycle_dormant_units) {
      Result<RecycleStats> r = RecycleDormantUnits(candidate, data.inputs, RecycleOptionsFrom(o_.learner), rng_);
      if (r.ok()) {
        recycled = r->recycled;
        if (recycled > 0) {
          LOG(kInfo) << "learner: recycled " << recycled << " of " << r->units << " dormant units";
        }
      } else if (r.status().code() == StatusCode::kFailedPrecondition) {
        // The structural refusal was logged at start; a refused reset (the
        // outputs would change) is logged once here.
        if (!warned_recycle_ && CheckRecyclable(candidate).ok()) {
          LOG(kWarning) << "learner: not recycling dormant units: " << r.status().message();
        }
        warned_recycle_ = true;
      } else {
        return r.status().WithContext("recycling dormant units");
      }
    }
    std::vector<torch::Tensor> params;
    for (const auto& p : candidate.parameters()) params.push_back(p);
    std::optional<FeatureProjector> projector;
    StepOptions so;
    so.loss.alpha = o_.learner.alpha;
    if (!o_.learner.feature.method.empty() && o_.learner.feature.weight > 0) {
      std::vector<int64_t> shape(data.inputs.sizes().begin() + 1, data.inputs.sizes().end());
      ASSIGN_OR_RETURN(int64_t sw, FeatureWidth(candidate, o_.learner.feature.method, shape));
      ASSIGN_OR_RETURN(int64_t tw, FeatureWidth(o_.teacher, o_.learner.feature.method, shape));
      projector.emplace(sw, tw);
      for (const auto& p : (*projector)->parameters()) params.push_back(p);
      so.feature_method = o_.learner.feature.method;
      so.feature_weight = o_.learner.feature.weight;
      so.teacher = &o_.teacher;
      so.projector = &*projector;
    }
    ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::Optimizer> opt,
                     MakeOptimizer(o_.learner.optimizer, o_.learner.learning_rate, std::move(params)));
    const TemperatureScheduleOptions sched = TemperatureScheduleFrom(o_.learner);
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_.total_steps = total;
    }

    // Replayed rows follow the new ones (AssembleTrainingData); their
    // original images are kept so every epoch draws views of the originals.
    const int64_t replay_first = static_cast<int64_t>(rs->train_new.size());
    torch::Tensor replay_originals;
    if (ReplayAugment(o_.learner).enabled() && replay_first < n) {
      replay_originals = data.inputs.narrow(0, replay_first, n - replay_first).clone();
    }
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    // Throughput is a measurement, not logic: real time even under a test clock.
    const auto t0 = std::chrono::steady_clock::now();
    int64_t seen = 0;
    double first_loss = 0, last_loss = 0, sum_loss = 0;
    for (int64_t step = 0; step < total; ++step) {
      if (replay_originals.defined() && step % per_epoch == 0) {
        RETURN_IF_ERROR(RefreshReplayViews(data, replay_first, replay_originals));
      }
      ASSIGN_OR_RETURN(Batch b, NextMiniBatch(data, order, step, bs));
      so.loss.temperature = TemperatureAt(sched, step, total);
      ASSIGN_OR_RETURN(StepStats stats, TrainStep(candidate, *opt, b, so));
      seen += stats.samples;
      if (step == 0) first_loss = stats.loss;
      last_loss = stats.loss;
      sum_loss += stats.loss;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::lock_guard<std::mutex> lock(mu_);
      progress_.step = step + 1;
      progress_.loss = stats.loss;
      progress_.samples_per_s = secs > 0 ? static_cast<double>(seen) / secs : 0.0;
    }
    if (o_.learner.balanced_finetune_epochs > 0 && o_.replay.replay_ratio > 0) {
      ASSIGN_OR_RETURN(int64_t steps, BalancedFinetune(rs, candidate, so, sched, total));
      total += steps;
    }
    {
      std::ostringstream os;
      os << "{\"steps\":" << total << ",\"recycled_units\":" << recycled << ",\"first\":" << first_loss
         << ",\"last\":" << last_loss
         << ",\"mean\":" << (total > 0 ? sum_loss / static_cast<double>(total) : 0.0) << "}";
      rs->record.loss_json = os.str();
    }
    candidate.eval();
    if (StopRequested()) return Status::Cancelled("stopped");

    // 6. Evaluate and gate.
    SetState("evaluating");
    ASSIGN_OR_RETURN(GateOutcome gate, EvaluateAndGate(rs, candidate, trained_classes));
    const bool pass = gate.decision.promote;
    const std::string reason = gate.decision.reason;
    const std::string& eval_json = gate.json;
    rs->record.eval_json = eval_json;
    if (StopRequested()) return Status::Cancelled("stopped");

    // 7. Save and register. No stop checks from here to the registry write,
    // so a stop never leaves a saved file without its record.
    SetState("saving");
    storage::VersionRecord rec;
    rec.parent = active_id_;
    rec.status = pass ? storage::VersionStatus::kCandidate : storage::VersionStatus::kRejected;
    rec.metrics_json = eval_json;
    rec.round_id = rs->record.id;
    rec.note = reason;
    ASSIGN_OR_RETURN(rec, versions_->Add(candidate, std::move(rec)));
    rs->record.candidate_version = rec.id;
    if (!pass) {
      rs->record.outcome = "rejected";
      rs->record.reason = reason;
      (void)o_.registry->LogEvent("reject", "version " + std::to_string(rec.id) + ": " + reason, rec.id);
      return Status::Ok();
    }
    if (o_.publisher != nullptr) {
      Status pub = o_.publisher->Publish(rec);
      if (!pub.ok()) {
        (void)o_.registry->SetVersionStatus(rec.id, storage::VersionStatus::kRejected,
                                            "publish failed: " + pub.message());
        rs->record.outcome = "rejected";
        rs->record.reason = "publish failed: " + pub.message();
        (void)o_.registry->LogEvent("reject", "version " + std::to_string(rec.id) + ": " + rs->record.reason,
                                    rec.id);
        return Status::Ok();
      }
    }
    // A publisher that activates in the registry itself (serialised with
    // rollbacks) must not be second-guessed here.
    if (o_.publisher == nullptr || !o_.publisher->ActivatesInRegistry()) {
      RETURN_IF_ERROR(o_.registry->Activate(rec.id));
    }
    active_ = candidate;
    active_id_ = rec.id;
    rs->record.outcome = "promoted";
    std::ostringstream msg;
    msg << "version " << rec.id << " promoted (" << gate.summary << ")";
    (void)o_.registry->LogEvent("swap", msg.str(), rec.id);
    return Status::Ok();
  }

  DistillerOptions o_;
  std::unique_ptr<VersionStore> versions_;
  // Owned by the learner thread (or the RunRoundNow caller).
  torch::jit::Module active_;
  int64_t active_id_;
  std::mt19937_64 rng_;
  bool warned_recycle_ = false;  // learner thread only
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
  DistillerProgress progress_;
  std::thread thread_;
};

}  // namespace

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
  ASSIGN_OR_RETURN(std::unique_ptr<VersionStore> versions, VersionStore::Create({o.state_dir, o.registry}));
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
