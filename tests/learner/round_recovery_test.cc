// Tests for learner/round_recovery.h over the in-memory store and registry
// (both pass the contract tests of RocksDB and SQLite): each crash window of
// a round, as the state it leaves behind, and what the next start makes of it.
#include "learner/round_recovery.h"

#include <doctest/doctest.h>

#include <memory>

#include "tests/support/fake_registry.h"
#include "tests/support/fake_sample_store.h"
#include "tests/support/test_samples.h"

namespace distilld::learner {
namespace {

struct Crashed {
  std::unique_ptr<storage::SampleStore> store = testing::NewFakeSampleStore();
  std::unique_ptr<storage::Registry> registry = testing::NewFakeRegistry();
  std::unique_ptr<replaybuffer::ReplayBuffer> buffer;
  int64_t round = 0;
  uint64_t last_id = 0;

  // Version 1 active, then a round that read 10 incoming samples and sent 2
  // of them to the holdout (they left "incoming" when split).
  Crashed() {
    replaybuffer::ReplayBufferOptions bo;
    bo.capacity = 100;
    buffer = std::move(replaybuffer::ReplayBuffer::Open(store.get(), bo)).value();
    storage::VersionRecord v1;
    v1.path = "models/v000001.pt";
    REQUIRE(registry->AddVersion(v1).ok());
    REQUIRE(registry->Activate(1).ok());
    std::vector<storage::Sample> samples;
    for (int i = 0; i < 10; ++i) samples.push_back(testing::MakeSample(i));
    auto range = store->AppendIncoming(samples);
    REQUIRE(range.ok());
    last_id = range->last;
    std::vector<storage::Mutation> held{
        {storage::Family::kIncoming, storage::SampleStore::IncomingKey(range->first), std::nullopt},
        {storage::Family::kIncoming, storage::SampleStore::IncomingKey(range->first + 1),
         std::nullopt}};
    REQUIRE(store->Apply(held).ok());
    round = registry->BeginRound("api").value();
  }

  // The round's candidate, registered with `status` (as the round left it).
  int64_t Register(storage::VersionStatus status) {
    storage::VersionRecord v;
    v.path = "models/v000002.pt";
    v.parent = 1;
    v.round_id = round;
    v.status =
        status == storage::VersionStatus::kActive ? storage::VersionStatus::kCandidate : status;
    v.metrics.evaluation = storage::RoundEvaluation{};
    v.metrics.evaluation->basis = "holdout";
    v.note = status == storage::VersionStatus::kRejected ? "held-out accuracy drops" : "";
    const int64_t id = registry->AddVersion(v).value();
    if (status == storage::VersionStatus::kActive) REQUIRE(registry->Activate(id).ok());
    return id;
  }

  RecoveryReport Recover() {
    RecoveryOptions o;
    o.store = store.get();
    o.registry = registry.get();
    o.buffer = buffer.get();
    auto r = RecoverInterruptedRound(o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    return *r;
  }
  uint64_t Incoming() { return store->CountIncoming(0).value(); }
  storage::RoundRecord Round() { return registry->GetRound(round).value(); }
};

TEST_CASE("recovery: a crash after promotion finishes the round's consumption, once") {
  Crashed c;
  REQUIRE(MarkRoundConsuming(*c.store, c.round, c.last_id).ok());
  const int64_t v = c.Register(storage::VersionStatus::kActive);
  RecoveryReport r = c.Recover();
  CHECK(r.samples_consumed == 8);
  CHECK(r.rounds_finished == 1);
  CHECK(c.Incoming() == 0);            // trained on, so not trained again
  CHECK(c.buffer->Stats().size == 8);  // offered to the replay buffer
  storage::RoundRecord round = c.Round();
  CHECK(round.outcome == storage::RoundOutcome::kPromoted);
  CHECK(round.candidate_version == v);
  CHECK(round.evaluation.has_value());
  CHECK(round.reason.find("after a restart") != std::string::npos);
  CHECK(c.registry->ActiveVersion().value()->id == v);
  // A second start finds nothing left to do: nothing is offered twice.
  RecoveryReport again = c.Recover();
  CHECK(again.samples_consumed == 0);
  CHECK(again.rounds_finished == 0);
  CHECK(c.buffer->Stats().size == 8);
}

TEST_CASE("recovery: a crash after a rejection consumes the samples as the round would have") {
  Crashed c;
  REQUIRE(MarkRoundConsuming(*c.store, c.round, c.last_id).ok());
  const int64_t v = c.Register(storage::VersionStatus::kRejected);
  RecoveryReport r = c.Recover();
  CHECK(r.samples_consumed == 8);
  CHECK(c.Incoming() == 0);
  CHECK(c.Round().outcome == storage::RoundOutcome::kRejected);
  CHECK(c.Round().candidate_version == v);
  CHECK(c.registry->ActiveVersion().value()->id == 1);
}

TEST_CASE("recovery: a version registered but never activated is rejected and its samples stay") {
  Crashed c;
  REQUIRE(MarkRoundConsuming(*c.store, c.round, c.last_id).ok());
  const int64_t v = c.Register(storage::VersionStatus::kCandidate);
  RecoveryReport r = c.Recover();
  CHECK(r.versions_rejected == 1);
  CHECK(r.samples_consumed == 0);
  CHECK(r.rounds_aborted == 1);
  CHECK(c.Incoming() == 8);  // the next round trains on them
  CHECK(c.buffer->Stats().size == 0);
  CHECK(c.registry->GetVersion(v)->status == storage::VersionStatus::kRejected);
  CHECK(c.registry->ActiveVersion().value()->id == 1);
  CHECK(c.Round().outcome == storage::RoundOutcome::kAborted);
  // The journal is gone: a later start does not consume them either.
  c.Recover();
  CHECK(c.Incoming() == 8);
}

TEST_CASE("recovery: a crash before any version leaves the samples for the next round") {
  Crashed c;
  SUBCASE("journal written, no version yet") {
    REQUIRE(MarkRoundConsuming(*c.store, c.round, c.last_id).ok());
  }
  SUBCASE("no journal (teacher pass, training)") {}
  RecoveryReport r = c.Recover();
  CHECK(r.samples_consumed == 0);
  CHECK(r.rounds_aborted == 1);
  CHECK(c.Incoming() == 8);
  CHECK(c.Round().outcome == storage::RoundOutcome::kAborted);
  CHECK(c.Round().reason == "daemon restarted");
}

TEST_CASE(
    "recovery: a crash after consuming, before the round's record, records the version's outcome") {
  Crashed c;
  const int64_t v = c.Register(storage::VersionStatus::kActive);
  // The consuming write happened (no journal, samples gone).
  std::vector<storage::Mutation> consumed;
  for (uint64_t id = c.last_id - 7; id <= c.last_id; ++id) {
    consumed.push_back(
        {storage::Family::kIncoming, storage::SampleStore::IncomingKey(id), std::nullopt});
  }
  REQUIRE(c.store->Apply(consumed).ok());
  RecoveryReport r = c.Recover();
  CHECK(r.samples_consumed == 0);
  CHECK(r.rounds_finished == 1);
  CHECK(c.Round().outcome == storage::RoundOutcome::kPromoted);
  CHECK(c.Round().candidate_version == v);
}

TEST_CASE(
    "recovery: before a round, a journalled round whose consuming write failed is finished first") {
  Crashed c;
  REQUIRE(MarkRoundConsuming(*c.store, c.round, c.last_id).ok());
  c.Register(storage::VersionStatus::kActive);
  RecoveryOptions o;
  o.store = c.store.get();
  o.registry = c.registry.get();
  o.buffer = c.buffer.get();
  auto consumed = FinishJournalledRound(o);
  REQUIRE(consumed.ok());
  CHECK(*consumed == 8);
  CHECK(c.Incoming() == 0);
  // Rounds are the learner's own business while it runs: left as they are.
  CHECK(c.Round().outcome == storage::RoundOutcome::kRunning);
  CHECK(FinishJournalledRound(o).value() == 0);
  CHECK(c.buffer->Stats().size == 8);
}

TEST_CASE("recovery: missing components are an error, not a crash") {
  RecoveryOptions o;
  CHECK(RecoverInterruptedRound(o).status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distilld::learner
