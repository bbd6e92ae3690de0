// See round.h: the end of a round, from a trained candidate to a served (or
// rejected) version. The gate itself is a pure function (gate.h); this file
// gathers its inputs and acts on its verdict.
#include <sstream>

#include "common/crash_point.h"
#include "learner/evaluate.h"
#include "learner/round.h"
#include "learner/round_settings.h"

namespace distilld::learner::internal {

// Evaluates candidate and active on the held-out set (old knowledge among
// the active's classes) and applies the gate. The active's label space is
// its recorded one, or for a version distilld did not train, what it
// evidently classifies on the held-out set.
Result<GateOutcome> RoundRunner::EvaluateAndGate(RoundState* rs, torch::jit::Module& candidate,
                                                 const std::set<int64_t>& trained_classes) {
  const int64_t chunk = o_.teacher_batch_size;
  ASSIGN_OR_RETURN(std::vector<storage::Sample> held, o_.holdout->All());
  const uint64_t holdout_generation = o_.holdout->generation();
  ASSIGN_OR_RETURN(storage::VersionRecord active_rec, o_.registry->GetVersion(active_id_));
  const std::optional<std::set<int64_t>>& recorded = active_rec.metrics.label_space;
  std::set<int64_t> active_space;
  if (recorded) {
    active_space = *recorded;
  } else {
    ASSIGN_OR_RETURN(EvalResult plain, EvaluateSamples(active_, held, chunk));
    active_space = InferLabelSpace(plain, GateOptionsFrom(o_.learner));
  }
  GateInput in;
  in.old_classes = active_space;
  std::vector<SampleOutcome> cand_out, act_out;
  ASSIGN_OR_RETURN(in.candidate, EvaluateSamples(candidate, held, chunk, active_space, &cand_out));
  ASSIGN_OR_RETURN(in.active, EvaluateSamples(active_, held, chunk, active_space, &act_out));
  in.paired = Pair(cand_out, act_out, active_space);
  if (in.candidate.labelled == 0) {
    // No labelled holdout yet: agreement with the teacher on this round's
    // new samples (they all carry teacher logits by now).
    in.teacher_basis = true;
    in.paired = PairedEval{};
    ASSIGN_OR_RETURN(in.candidate, EvaluateSamples(candidate, rs->train_new, chunk));
    ASSIGN_OR_RETURN(in.active, EvaluateSamples(active_, rs->train_new, chunk));
  }
  GateOutcome out;
  storage::RoundEvaluation& e = out.evaluation;
  e.gate = DecidePromotion(in, GateOptionsFrom(o_.learner));
  e.basis = e.gate.basis;
  e.candidate = in.candidate.ToScore();
  e.active = in.active.ToScore();
  e.active_version = active_id_;
  e.label_space = active_space;
  e.label_space.insert(trained_classes.begin(), trained_classes.end());
  e.active_label_space = active_space;
  e.active_label_space_source = recorded ? storage::LabelSpaceSource::kRecorded : storage::LabelSpaceSource::kInferred;
  e.holdout_size = static_cast<int64_t>(held.size());
  e.holdout_generation = holdout_generation;
  std::ostringstream line;
  line.precision(4);
  if (in.teacher_basis) {
    line << "teacher agreement " << in.candidate.agreement() << " vs " << in.active.agreement();
  } else {
    line << "held-out accuracy " << in.candidate.accuracy() << " vs " << in.active.accuracy();
  }
  out.summary = line.str();
  rs->record.evaluation = out.evaluation;
  return out;
}

// Saves and registers the candidate (VersionStore::Add: one id, one file,
// one record), then for a passing one publishes and activates it.
Status RoundRunner::SaveAndPublish(RoundState* rs, torch::jit::Module& candidate, const GateOutcome& gate) {
  const bool pass = gate.evaluation.gate.promote;
  const std::string& reason = gate.evaluation.gate.reason;
  storage::VersionRecord rec;
  rec.parent = active_id_;
  rec.status = pass ? storage::VersionStatus::kCandidate : storage::VersionStatus::kRejected;
  rec.metrics.label_space = gate.evaluation.label_space;
  rec.metrics.evaluation = gate.evaluation;
  rec.round_id = rs->record.id;
  rec.note = reason;
  ASSIGN_OR_RETURN(rec, versions_->Add(candidate, std::move(rec)));
  CrashPoint("round.version_registered");
  rs->record.candidate_version = rec.id;
  auto reject = [&](const std::string& why) {
    rs->record.outcome = storage::RoundOutcome::kRejected;
    rs->record.reason = why;
    (void)o_.registry->LogEvent(storage::EventKind::kReject, "version " + std::to_string(rec.id) + ": " + why, rec.id);
    return Status::Ok();
  };
  if (!pass) return reject(reason);
  if (o_.publisher != nullptr) {
    Status pub = o_.publisher->Publish(rec);
    if (!pub.ok()) {
      (void)o_.registry->SetVersionStatus(rec.id, storage::VersionStatus::kRejected,
                                          "publish failed: " + pub.message());
      return reject("publish failed: " + pub.message());
    }
  }
  // A publisher that activates in the registry itself (serialised with
  // rollbacks) must not be second-guessed here.
  if (o_.publisher == nullptr || !o_.publisher->ActivatesInRegistry()) {
    RETURN_IF_ERROR(o_.registry->Activate(rec.id));
  }
  active_ = candidate;
  active_id_ = rec.id;
  rs->record.outcome = storage::RoundOutcome::kPromoted;
  (void)o_.registry->LogEvent(storage::EventKind::kSwap, "version " + std::to_string(rec.id) + " promoted (" + gate.summary + ")",
                              rec.id);
  return Status::Ok();
}

}  // namespace distilld::learner::internal
