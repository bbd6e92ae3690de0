// Finishing a round that a crash interrupted. A round's version lives in the
// registry (SQLite) and its consumption of samples (the cursor, the replay
// offer) in the sample store (RocksDB): no single write covers both. So
// before a round registers a version it journals which samples it took
// (MarkRoundConsuming), its consuming write clears the journal, and at the
// next start RecoverInterruptedRound reads it:
// - the version was promoted or rejected: the round's consumption is done
//   now (the samples are offered to the replay buffer and leave "incoming"
//   exactly once) and its record gets the version's outcome and evaluation;
// - the version was registered but never activated, or never registered:
//   the samples stay for the next round (nothing lost, nothing trained twice
//   into a served version), an unactivated version is marked rejected.
// Rounds still "running" or "queued" with no version become "aborted".
//
// Free functions over caller-owned components; call with the learner
// stopped (at daemon start, before the learner thread runs).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "replaybuffer/replay_buffer.h"
#include "storage/registry.h"
#include "storage/sample_store.h"

namespace distilld::learner {

struct RecoveryOptions {
  // Not owned; all required.
  storage::SampleStore* store = nullptr;
  storage::Registry* registry = nullptr;
  replaybuffer::ReplayBuffer* buffer = nullptr;
  // Seeds the replay buffer's offer of a finished round's samples.
  uint64_t seed = 42;
  // The reason recorded on rounds that cannot be finished.
  std::string abort_reason = "daemon restarted";
};

struct RecoveryReport {
  int64_t rounds_finished = 0;  // given their version's outcome
  int64_t rounds_aborted = 0;
  int64_t samples_consumed = 0;   // by a finished round's journal
  int64_t versions_rejected = 0;  // registered, never activated
};

Result<RecoveryReport> RecoverInterruptedRound(const RecoveryOptions& options);

// The journal part alone, for the learner before each round: a round whose
// consuming write failed after its version was decided (a full disk) is
// finished before the next one reads, so that one does not train on the
// same samples again. Returns the samples consumed.
Result<int64_t> FinishJournalledRound(const RecoveryOptions& options);

// The journal entry: round `round_id` is consuming the incoming samples up
// to `last_id`. Written before the round registers its version.
Status MarkRoundConsuming(storage::SampleStore& store, int64_t round_id, uint64_t last_id);

}  // namespace distilld::learner
