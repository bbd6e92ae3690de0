// See round_recovery.h.
#include "learner/round_recovery.h"

#include <cstdlib>
#include <optional>
#include <random>
#include <vector>

#include "learner/round.h"

// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"

namespace distilld::learner {
namespace {

using internal::kCursorKey;
using internal::kPendingKey;

struct Journal {
  int64_t round_id = 0;
  uint64_t last_id = 0;
};

std::optional<Journal> ReadJournal(storage::SampleStore& store) {
  auto v = store.Get(storage::Family::kState, kPendingKey);
  if (!v.ok() || !v->has_value()) return std::nullopt;
  Journal j;
  char* end = nullptr;
  j.round_id = std::strtoll((*v)->c_str(), &end, 10);
  j.last_id = std::strtoull(end, nullptr, 10);
  if (j.round_id <= 0 || j.last_id == 0) return std::nullopt;
  return j;
}

std::optional<storage::VersionRecord> VersionOfRound(
    const std::vector<storage::VersionRecord>& versions, int64_t round_id) {
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (it->round_id == round_id) return *it;
  }
  return std::nullopt;
}

bool Decided(const storage::VersionRecord& v) {
  return v.status == storage::VersionStatus::kActive ||
         v.status == storage::VersionStatus::kRetired ||
         v.status == storage::VersionStatus::kRejected;
}

// The consuming write of a round that decided before the crash: what
// RoundRunner::Consume would have written. The round's held-out samples
// left "incoming" when they were split, so what is left up to last_id is
// what it trained on.
Result<int64_t> FinishConsume(const RecoveryOptions& o, const Journal& j) {
  const storage::SampleId cursor = internal::LoadCursor(*o.store);
  std::vector<storage::Sample> trained;
  std::vector<storage::Mutation> m;
  storage::SampleId after = cursor;
  while (after < j.last_id) {
    ASSIGN_OR_RETURN(std::vector<storage::StoredSample> part, o.store->ReadIncoming(after, 4096));
    if (part.empty()) break;
    for (auto& s : part) {
      after = s.id;
      if (s.id > j.last_id) break;
      m.push_back(
          {storage::Family::kIncoming, storage::SampleStore::IncomingKey(s.id), std::nullopt});
      trained.push_back(std::move(s.sample));
    }
  }
  m.push_back({storage::Family::kState, kCursorKey, std::to_string(j.last_id)});
  m.push_back({storage::Family::kState, kPendingKey, std::nullopt});
  std::mt19937_64 rng(o.seed);
  if (!trained.empty()) {
    Status offered = o.buffer->Offer(trained, rng, m);
    if (offered.ok()) return static_cast<int64_t>(trained.size());
    LOG(kError) << "learner: replay buffer offer failed while finishing round " << j.round_id
                << ": " << offered.ToString();
  }
  RETURN_IF_ERROR(o.store->Apply(m).WithContext("finishing an interrupted round's cursor"));
  return static_cast<int64_t>(trained.size());
}

}  // namespace

Status MarkRoundConsuming(storage::SampleStore& store, int64_t round_id, uint64_t last_id) {
  std::vector<storage::Mutation> m{{storage::Family::kState, kPendingKey,
                                    std::to_string(round_id) + " " + std::to_string(last_id)}};
  return store.Apply(m).WithContext("journalling the round's samples");
}

Result<int64_t> FinishJournalledRound(const RecoveryOptions& o) {
  if (o.store == nullptr || o.registry == nullptr || o.buffer == nullptr) {
    return Status::InvalidArgument("round recovery needs a store, a registry and a buffer");
  }
  std::optional<Journal> j = ReadJournal(*o.store);
  if (!j) return int64_t{0};
  ASSIGN_OR_RETURN(std::vector<storage::VersionRecord> versions, o.registry->ListVersions());
  std::optional<storage::VersionRecord> v = VersionOfRound(versions, j->round_id);
  if (v && Decided(*v)) {
    ASSIGN_OR_RETURN(int64_t consumed, FinishConsume(o, *j));
    LOG(kInfo) << "learner: round " << j->round_id << " stopped after version " << v->id
               << " was decided; its " << consumed << " samples are consumed now";
    return consumed;
  }
  // Nothing of the round is served: its samples go to the next round.
  std::vector<storage::Mutation> m{{storage::Family::kState, kPendingKey, std::nullopt}};
  RETURN_IF_ERROR(o.store->Apply(m).WithContext("clearing an interrupted round's journal"));
  return int64_t{0};
}

Result<RecoveryReport> RecoverInterruptedRound(const RecoveryOptions& o) {
  RecoveryReport report;
  ASSIGN_OR_RETURN(report.samples_consumed, FinishJournalledRound(o));
  ASSIGN_OR_RETURN(std::vector<storage::VersionRecord> versions, o.registry->ListVersions());
  // Any version still a candidate was registered by a round that never got
  // to activate it; the round's samples are trained again, so it is not
  // offered for activation later.
  for (const auto& v : versions) {
    if (v.status != storage::VersionStatus::kCandidate || !v.round_id) continue;
    RETURN_IF_ERROR(
        o.registry->SetVersionStatus(v.id, storage::VersionStatus::kRejected,
                                     "the daemon stopped before activating it; its round's samples "
                                     "go to the next round"));
    ++report.versions_rejected;
  }
  // `versions` still shows the candidates just rejected as candidates: not
  // decided, so their rounds are aborted below like any other.
  ASSIGN_OR_RETURN(std::vector<storage::RoundRecord> rounds, o.registry->ListRounds(100));
  for (storage::RoundRecord r : rounds) {
    if (r.outcome != storage::RoundOutcome::kRunning && r.outcome != storage::RoundOutcome::kQueued)
      continue;
    std::optional<storage::VersionRecord> v = VersionOfRound(versions, r.id);
    if (!v || !Decided(*v)) {
      ++report.rounds_aborted;  // by AbortRunningRounds below
      continue;
    }
    r.candidate_version = v->id;
    r.outcome = v->status == storage::VersionStatus::kRejected ? storage::RoundOutcome::kRejected
                                                               : storage::RoundOutcome::kPromoted;
    r.reason = "recorded after a restart: the daemon stopped after version " +
               std::to_string(v->id) + " was " +
               (r.outcome == storage::RoundOutcome::kPromoted ? "activated" : "rejected") +
               (v->note.empty() ? "" : " (" + v->note + ")");
    if (v->metrics.evaluation) r.evaluation = v->metrics.evaluation;
    RETURN_IF_ERROR(o.registry->UpdateRound(r));
    ++report.rounds_finished;
  }
  RETURN_IF_ERROR(o.registry->AbortRunningRounds(o.abort_reason));
  return report;
}

}  // namespace distilld::learner
