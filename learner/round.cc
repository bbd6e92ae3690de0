// See round.h: the steps of a round around training, in the order Run takes
// them (distiller.h describes the round as a whole).
#include "learner/round.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/crash_point.h"
#include "common/log.h"
#include "learner/evaluate.h"
#include "learner/round_recovery.h"

namespace distilld::learner::internal {
namespace {

std::string EncodeU64(uint64_t v) { return std::to_string(v); }
uint64_t DecodeU64(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }

storage::SampleId LoadU64(storage::SampleStore& store, const char* key) {
  auto v = store.Get(storage::Family::kState, key);
  if (!v.ok() || !v->has_value()) return 0;
  return DecodeU64(**v);
}

}  // namespace

storage::SampleId LoadCursor(storage::SampleStore& store) { return LoadU64(store, kCursorKey); }

RoundRunner::RoundRunner(const DistillerOptions& options, std::unique_ptr<VersionStore> versions,
                         torch::jit::Module active, int64_t active_id)
    : o_(options),
      versions_(std::move(versions)),
      teacher_(options.teacher),
      active_(std::move(active)),
      active_id_(active_id),
      rng_(options.learner.seed) {}

Status RoundRunner::Run(RoundState* rs, RoundHooks& hooks) {
  RETURN_IF_ERROR(SyncActive());
  {
    RecoveryOptions ro;
    ro.store = o_.store;
    ro.registry = o_.registry;
    ro.buffer = o_.buffer;
    ro.seed = o_.learner.seed;
    RETURN_IF_ERROR(FinishJournalledRound(ro).status());
  }
  RETURN_IF_ERROR(ReadIncoming(rs, hooks));
  if (rs->incoming.empty()) {
    // Queued behind a round that took the samples: nothing to do, and not
    // an error (no back-off).
    rs->record.outcome = storage::RoundOutcome::kSkipped;
    rs->record.reason = hooks.SkipReason();
    return Status::Ok();
  }
  RETURN_IF_ERROR(LabelWithTeacher(rs, hooks));
  RETURN_IF_ERROR(hooks.CheckStop());
  RETURN_IF_ERROR(SplitHoldout(rs));
  RETURN_IF_ERROR(hooks.CheckStop());
  RETURN_IF_ERROR(DrawReplay(rs, hooks));
  if (rs->train_new.empty()) {
    rs->record.outcome = storage::RoundOutcome::kRejected;
    rs->record.reason = "every new sample went to the holdout";
  } else {
    hooks.SetState(LearnerState::kTraining);
    Result<TrainedCandidate> trained = Train(rs, hooks);
    if (trained.status().code() == StatusCode::kAborted) {
      // A diverging loss: the active version stays, the samples are consumed.
      rs->record.outcome = storage::RoundOutcome::kAborted;
      rs->record.reason = trained.status().message();
      (void)o_.registry->LogEvent(storage::EventKind::kRoundAborted,
                                  "round " + std::to_string(rs->record.id) + ": " + trained.status().message());
    } else if (!trained.ok()) {
      return trained.status();
    } else {
      RETURN_IF_ERROR(hooks.CheckStop());
      hooks.SetState(LearnerState::kEvaluating);
      ASSIGN_OR_RETURN(GateOutcome gate, EvaluateAndGate(rs, trained->model, trained->trained_classes));
      RETURN_IF_ERROR(hooks.CheckStop());
      // No stop checks from here to the registry write, so a stop never
      // leaves a saved file without its record.
      hooks.SetState(LearnerState::kSaving);
      RETURN_IF_ERROR(MarkRoundConsuming(*o_.store, rs->record.id, rs->last_id));
      RETURN_IF_ERROR(SaveAndPublish(rs, trained->model, gate));
      CrashPoint("round.decided");
    }
  }
  hooks.SetState(LearnerState::kConsuming);
  return Consume(rs);
}

Status RoundRunner::SyncActive() {
  ASSIGN_OR_RETURN(std::optional<storage::VersionRecord> active, o_.registry->ActiveVersion());
  if (!active.has_value()) return Status::FailedPrecondition("no active version in the registry");
  if (active->id == active_id_) return Status::Ok();
  ASSIGN_OR_RETURN(active_, versions_->Load(*active));
  LOG(kInfo) << "learner: active version is now " << active->id << " (changed outside the learner)";
  active_id_ = active->id;
  return Status::Ok();
}

Status RoundRunner::ReadIncoming(RoundState* rs, RoundHooks& hooks) {
  ASSIGN_OR_RETURN(rs->incoming, o_.store->ReadIncoming(LoadCursor(*o_.store), o_.max_round_samples));
  rs->last_id = rs->incoming.empty() ? 0 : rs->incoming.back().id;
  hooks.MarkRead(rs->last_id);
  rs->record.samples_new = static_cast<int64_t>(rs->incoming.size());
  return Status::Ok();
}

// Teacher logits once per sample, stored with it.
Status RoundRunner::LabelWithTeacher(RoundState* rs, RoundHooks& hooks) {
  hooks.SetState(LearnerState::kTeacher);
  std::vector<storage::Sample*> ptrs;
  for (auto& s : rs->incoming) ptrs.push_back(&s.sample);
  ASSIGN_OR_RETURN(size_t computed, AttachTeacherLogits(ptrs, hooks));
  if (computed == 0) return Status::Ok();
  // In writes of a bounded size: the logits are a cache (a crash between two
  // writes costs only their recomputation), and one write of a whole round
  // made the learner, a low-priority thread, RocksDB's write-group leader
  // for seconds, with every ingest queued behind it (measured in the soak:
  // 20,000 samples, a status read waiting 55 s under CPU load).
  constexpr size_t kChunk = 512;
  std::vector<storage::Mutation> m;
  for (size_t i = 0; i < rs->incoming.size(); ++i) {
    const auto& s = rs->incoming[i];
    ASSIGN_OR_RETURN(std::string enc, storage::EncodeSample(s.sample));
    m.push_back({storage::Family::kIncoming, storage::SampleStore::IncomingKey(s.id), std::move(enc)});
    if (m.size() == kChunk || i + 1 == rs->incoming.size()) {
      RETURN_IF_ERROR(hooks.YieldToInference());
      RETURN_IF_ERROR(o_.store->Apply(m).WithContext("storing teacher logits"));
      m.clear();
    }
  }
  return Status::Ok();
}

// The held-out share. Samples already split by an earlier, interrupted round
// (id <= split_upto) are not split again.
Status RoundRunner::SplitHoldout(RoundState* rs) {
  const storage::SampleId split_upto = LoadU64(*o_.store, kSplitKey);
  std::vector<storage::Sample> to_split;
  std::vector<storage::SampleId> split_ids;
  for (const auto& s : rs->incoming) {
    if (s.id > split_upto) {
      to_split.push_back(s.sample);
      split_ids.push_back(s.id);
    } else {
      rs->train_new.push_back(s.sample);
    }
  }
  if (to_split.empty()) return Status::Ok();
  // One atomic write holds the held-out samples, their deletion from
  // "incoming" and the split marker: after a crash a sample is either held
  // out or still trainable, never both.
  const storage::SampleId last_id = rs->last_id;
  auto also = [&](const std::vector<bool>& held) {
    std::vector<storage::Mutation> m;
    for (size_t j = 0; j < held.size(); ++j) {
      if (held[j]) m.push_back({storage::Family::kIncoming, storage::SampleStore::IncomingKey(split_ids[j]), {}});
    }
    m.push_back({storage::Family::kState, kSplitKey, EncodeU64(last_id)});
    return m;
  };
  ASSIGN_OR_RETURN(std::vector<storage::Sample> kept, o_.holdout->Split(std::move(to_split), also));
  for (auto& s : kept) rs->train_new.push_back(std::move(s));
  return Status::Ok();
}

// The replay mix: replay_ratio old samples per new one.
Status RoundRunner::DrawReplay(RoundState* rs, RoundHooks& hooks) {
  if (o_.replay.replay_ratio > 0 && !rs->train_new.empty()) {
    const size_t n =
        static_cast<size_t>(std::llround(o_.replay.replay_ratio * static_cast<double>(rs->train_new.size())));
    // A buffer smaller than the request is drawn again (each draw without
    // replacement), so the ratio of old to new holds in every round.
    while (rs->replay.size() < n) {
      ASSIGN_OR_RETURN(std::vector<storage::Sample> part, o_.buffer->Sample(n - rs->replay.size(), rng_));
      if (part.empty()) break;
      for (auto& s : part) rs->replay.push_back(std::move(s));
    }
    std::vector<storage::Sample*> ptrs;
    for (auto& s : rs->replay) ptrs.push_back(&s);
    ASSIGN_OR_RETURN(size_t unused, AttachTeacherLogits(ptrs, hooks));
    (void)unused;
  }
  rs->record.samples_replay = static_cast<int64_t>(rs->replay.size());
  return Status::Ok();
}

// The offer to the replay buffer, the cursor and the deletion of the consumed
// samples are one atomic write, so a crash never offers the same samples
// twice.
Status RoundRunner::Consume(RoundState* rs) {
  std::vector<storage::Mutation> m;
  for (const auto& s : rs->incoming) {
    m.push_back({storage::Family::kIncoming, storage::SampleStore::IncomingKey(s.id), std::nullopt});
  }
  m.push_back({storage::Family::kState, kCursorKey, EncodeU64(rs->last_id)});
  m.push_back({storage::Family::kState, kPendingKey, std::nullopt});
  if (!rs->train_new.empty()) {
    Status offered = o_.buffer->Offer(rs->train_new, rng_, m);
    if (offered.ok()) return Status::Ok();
    // The buffer refused the samples (e.g. one the policy cannot file); the
    // round's work stands, so the cursor still advances without them.
    LOG(kError) << "learner: replay buffer offer failed: " << offered.ToString();
  }
  return o_.store->Apply(m).WithContext("advancing the learner cursor");
}

Result<size_t> RoundRunner::AttachTeacherLogits(const std::vector<storage::Sample*>& samples, RoundHooks& hooks) {
  std::vector<storage::Sample*> missing;
  for (auto* s : samples) {
    if (s->teacher_logits.empty()) missing.push_back(s);
  }
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, o_.teacher_batch_size));
  for (size_t i = 0; i < missing.size(); i += chunk) {
    hooks.Beat();
    RETURN_IF_ERROR(hooks.CheckStop());
    RETURN_IF_ERROR(hooks.YieldToInference());
    std::vector<storage::Sample> part;
    for (size_t j = i; j < std::min(missing.size(), i + chunk); ++j) part.push_back(*missing[j]);
    ASSIGN_OR_RETURN(torch::Tensor inputs, SamplesToInputs(part));
    ASSIGN_OR_RETURN(torch::Tensor logits, ForwardInBatches(teacher_, inputs, static_cast<int64_t>(chunk)));
    logits = logits.contiguous();
    CrashPoint("round.teacher_pass");
    const int64_t width = logits.size(1);
    const float* p = logits.data_ptr<float>();
    for (size_t j = 0; j < part.size(); ++j) {
      missing[i + j]->teacher_logits.assign(p + static_cast<int64_t>(j) * width,
                                            p + static_cast<int64_t>(j + 1) * width);
    }
  }
  return missing.size();
}

}  // namespace distilld::learner::internal
