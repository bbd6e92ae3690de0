// Contract of storage::Registry: every templated case runs against the SQLite
// registry and against testing::FakeRegistry with the same assertions. A unit
// test may use the fake only for behaviour pinned here; when the real
// registry changes observable behaviour, a case here fails for one of the two
// and the fake is updated with it.
//
// Run one implementation with  -tc='*<sqlite>'  or  -tc='*<fake>'.
#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "storage/registry.h"
#include "tests/support/fake_registry.h"
#include "tests/storage/sample_evaluation.h"
#include "tests/support/temp_dir.h"

namespace distilld::storage {
namespace {

// The real registry, in a temporary directory removed with the object.
struct Sqlite {
  testing::TempDir dir;
  std::unique_ptr<Registry> Open(Clock* clock) {
    RegistryOptions o;
    o.path = dir.str("registry.sqlite");
    o.clock = clock;
    auto r = Registry::Open(o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    return std::move(r).value();
  }
};

struct Fake {
  std::unique_ptr<Registry> Open(Clock* clock) { return testing::NewFakeRegistry(clock); }
};

}  // namespace
}  // namespace distilld::storage

TYPE_TO_STRING_AS("sqlite", distilld::storage::Sqlite);
TYPE_TO_STRING_AS("fake", distilld::storage::Fake);

// A failed CHECK on an id list then shows both lists.
template <>
struct doctest::StringMaker<std::vector<int64_t>> {
  static doctest::String convert(const std::vector<int64_t>& ids) {
    std::string s = "[";
    for (int64_t id : ids) s += (s.size() > 1 ? ", " : "") + std::to_string(id);
    return (s + "]").c_str();
  }
};

namespace distilld::storage {
namespace {

using IdList = std::vector<int64_t>;

VersionRecord Version(const std::string& path) {
  VersionRecord v;
  v.path = path;
  v.sha256 = std::string(64, 'a');
  v.size_bytes = 1234;
  return v;
}

template <typename Record>
IdList IdsOf(const Result<std::vector<Record>>& records) {
  REQUIRE_MESSAGE(records.ok(), records.status().ToString());
  IdList ids;
  for (const auto& r : *records) ids.push_back(r.id);
  return ids;
}

VersionStatus StatusOf(Registry& reg, int64_t id) {
  auto v = reg.GetVersion(id);
  REQUIRE_MESSAGE(v.ok(), v.status().ToString());
  return v->status;
}

// Id of the active version, 0 for none; also checks there is at most one.
int64_t ActiveId(Registry& reg) {
  auto versions = reg.ListVersions();
  REQUIRE(versions.ok());
  int64_t id = 0;
  int n = 0;
  for (const auto& v : *versions) {
    if (v.status != VersionStatus::kActive) continue;
    id = v.id;
    ++n;
  }
  CHECK(n <= 1);
  auto active = reg.ActiveVersion();
  REQUIRE(active.ok());
  CHECK((active->has_value() ? (*active)->id : 0) == id);
  return id;
}

TEST_CASE_TEMPLATE("versions: add, get, list, status, metrics", Impl, Sqlite, Fake) {
  Impl impl;
  ManualClock clock(5'000'000);
  auto reg = impl.Open(&clock);
  CHECK(reg->ListVersions()->empty());
  CHECK(reg->GetVersion(1).status().code() == StatusCode::kNotFound);

  VersionRecord v1 = Version("models/v000001.pt");
  v1.metrics.label_space = std::set<int64_t>{0, 3};
  v1.note = "it's \"quoted\"; DROP TABLE versions; --";
  auto id1 = reg->AddVersion(v1);
  REQUIRE(id1.ok());
  CHECK(*id1 == 1);
  VersionRecord v2 = Version("models/v000002.pt");
  v2.parent = 1;
  v2.round_id = 7;
  v2.created_us = 42;
  v2.status = VersionStatus::kRejected;
  auto id2 = reg->AddVersion(v2);
  REQUIRE(id2.ok());
  CHECK(*id2 == 2);

  VersionRecord got = *reg->GetVersion(1);
  CHECK(got.id == 1);
  CHECK(got.path == v1.path);
  CHECK(got.sha256 == v1.sha256);
  CHECK(got.size_bytes == 1234);
  CHECK(got.created_us == 5'000'000);  // from the clock, because it was 0
  CHECK(got.status == VersionStatus::kCandidate);
  CHECK(got.metrics == v1.metrics);
  CHECK(got.note == v1.note);
  CHECK(!got.parent.has_value());
  CHECK(!got.round_id.has_value());
  got = *reg->GetVersion(2);
  CHECK(got.parent == 1);
  CHECK(got.round_id == 7);
  CHECK(got.created_us == 42);
  CHECK(got.status == VersionStatus::kRejected);  // any status but active may be added
  REQUIRE(reg->AddVersion(Version("models/v000003.pt")).ok());
  CHECK(IdsOf(reg->ListVersions()) == IdList{1, 2, 3});
  CHECK(reg->GetVersion(4).status().code() == StatusCode::kNotFound);
  CHECK(reg->GetVersion(0).status().code() == StatusCode::kNotFound);

  VersionRecord active = Version("x");
  active.status = VersionStatus::kActive;
  CHECK(reg->AddVersion(active).status().code() == StatusCode::kInvalidArgument);

  REQUIRE(reg->SetVersionStatus(3, VersionStatus::kRejected, "worse by 2%").ok());
  CHECK(StatusOf(*reg, 3) == VersionStatus::kRejected);
  CHECK(reg->GetVersion(3)->note == "worse by 2%");
  // Any non-active status may follow any other; the note is replaced, also by "".
  REQUIRE(reg->SetVersionStatus(3, VersionStatus::kCandidate, "").ok());
  CHECK(StatusOf(*reg, 3) == VersionStatus::kCandidate);
  CHECK(reg->GetVersion(3)->note.empty());
  REQUIRE(reg->SetVersionStatus(3, VersionStatus::kRetired, "old").ok());
  CHECK(StatusOf(*reg, 3) == VersionStatus::kRetired);
  CHECK(reg->SetVersionStatus(1, VersionStatus::kActive, "").code() ==
        StatusCode::kInvalidArgument);
  CHECK(reg->SetVersionStatus(9, VersionStatus::kRetired, "").code() == StatusCode::kNotFound);

  VersionMetrics metrics;
  metrics.evaluation = testing::SampleEvaluation();
  metrics.label_space = metrics.evaluation->label_space;
  REQUIRE(reg->SetVersionMetrics(1, metrics).ok());
  CHECK(reg->GetVersion(1)->metrics == metrics);  // every field, every digit
  REQUIRE(reg->SetVersionMetrics(1, metrics).ok());  // unchanged value is fine
  CHECK(reg->SetVersionMetrics(9, {}).code() == StatusCode::kNotFound);
  CHECK(IdsOf(reg->ListVersions()) == IdList{1, 2, 3});
}

TEST_CASE_TEMPLATE("a version's parent must exist", Impl, Sqlite, Fake) {
  Impl impl;
  ManualClock clock;
  auto reg = impl.Open(&clock);
  VersionRecord orphan = Version("orphan");
  orphan.parent = 5;
  CHECK(reg->AddVersion(orphan).status().code() == StatusCode::kFailedPrecondition);
  CHECK(reg->ListVersions()->empty());
  // The refused insert used no id.
  auto id = reg->AddVersion(Version("v1"));
  REQUIRE(id.ok());
  CHECK(*id == 1);
  orphan.parent = 1;
  auto child = reg->AddVersion(orphan);
  REQUIRE(child.ok());
  CHECK(*child == 2);
  CHECK(reg->GetVersion(2)->parent == 1);
}

TEST_CASE_TEMPLATE("explicit version ids: used as given, never twice; LatestVersionId follows", Impl, Sqlite, Fake) {
  Impl impl;
  ManualClock clock;
  auto reg = impl.Open(&clock);
  CHECK(*reg->LatestVersionId() == 0);
  VersionRecord seven = Version("models/v000007.pt");
  seven.id = 7;
  auto id = reg->AddVersion(seven);
  REQUIRE(id.ok());
  CHECK(*id == 7);
  CHECK(reg->GetVersion(7)->path == "models/v000007.pt");
  CHECK(*reg->LatestVersionId() == 7);
  CHECK(reg->AddVersion(seven).status().code() == StatusCode::kAlreadyExists);
  seven.id = -1;
  CHECK(reg->AddVersion(seven).status().code() == StatusCode::kInvalidArgument);
  // An id of 0 takes the next one after the highest.
  auto next = reg->AddVersion(Version("auto"));
  REQUIRE(next.ok());
  CHECK(*next == 8);
  CHECK(*reg->LatestVersionId() == 8);
  CHECK(reg->ListVersions()->size() == 2);
}

TEST_CASE_TEMPLATE("Activate keeps exactly one active version", Impl, Sqlite, Fake) {
  Impl impl;
  ManualClock clock;
  auto reg = impl.Open(&clock);
  for (int i = 1; i <= 4; ++i) REQUIRE(reg->AddVersion(Version("v" + std::to_string(i))).ok());
  CHECK(ActiveId(*reg) == 0);
  CHECK(!reg->ActiveVersion()->has_value());

  REQUIRE(reg->Activate(1).ok());
  CHECK(ActiveId(*reg) == 1);
  REQUIRE(reg->Activate(2).ok());
  CHECK(ActiveId(*reg) == 2);
  CHECK(StatusOf(*reg, 1) == VersionStatus::kRetired);
  REQUIRE(reg->Activate(2).ok());  // activating the active one changes nothing
  CHECK(ActiveId(*reg) == 2);
  CHECK(StatusOf(*reg, 1) == VersionStatus::kRetired);
  // A retired version can come back (a rollback); the one it replaces retires.
  REQUIRE(reg->SetVersionStatus(1, VersionStatus::kRetired, "kept note").ok());
  REQUIRE(reg->Activate(1).ok());
  CHECK(ActiveId(*reg) == 1);
  CHECK(StatusOf(*reg, 2) == VersionStatus::kRetired);
  CHECK(reg->GetVersion(1)->note == "kept note");  // Activate leaves notes alone
  CHECK((*reg->ActiveVersion())->path == "v1");

  // The active version cannot be demoted directly: that would leave none.
  CHECK(reg->SetVersionStatus(1, VersionStatus::kRetired, "").code() ==
        StatusCode::kFailedPrecondition);
  CHECK(reg->SetVersionStatus(1, VersionStatus::kRejected, "").code() ==
        StatusCode::kFailedPrecondition);
  CHECK(reg->SetVersionStatus(1, VersionStatus::kCandidate, "").code() ==
        StatusCode::kFailedPrecondition);
  // Refused activations leave the active version as it was.
  CHECK(reg->Activate(99).code() == StatusCode::kNotFound);
  REQUIRE(reg->SetVersionStatus(3, VersionStatus::kRejected, "bad").ok());
  CHECK(reg->Activate(3).code() == StatusCode::kFailedPrecondition);
  CHECK(ActiveId(*reg) == 1);
  CHECK(StatusOf(*reg, 3) == VersionStatus::kRejected);
  REQUIRE(reg->Activate(3, /*allow_rejected=*/true).ok());
  CHECK(ActiveId(*reg) == 3);
  CHECK(StatusOf(*reg, 1) == VersionStatus::kRetired);
  CHECK(StatusOf(*reg, 4) == VersionStatus::kCandidate);  // bystanders untouched

  // A version whose file the retention policy removed stays listed but
  // cannot be served again; the active version's file is never removed.
  CHECK(reg->MarkFileRemoved(3).code() == StatusCode::kFailedPrecondition);
  CHECK(reg->MarkFileRemoved(99).code() == StatusCode::kNotFound);
  clock.Advance(7);
  REQUIRE(reg->MarkFileRemoved(4).ok());
  const std::optional<int64_t> removed_at = reg->GetVersion(4)->file_removed_us;
  REQUIRE(removed_at.has_value());
  clock.Advance(5);
  REQUIRE(reg->MarkFileRemoved(4).ok());  // the first time is kept
  CHECK(reg->GetVersion(4)->file_removed_us == removed_at);
  CHECK_FALSE(reg->GetVersion(1)->file_removed_us.has_value());
  CHECK(reg->Activate(4).code() == StatusCode::kFailedPrecondition);
  CHECK(ActiveId(*reg) == 3);

  // Concurrent activations from several threads still leave exactly one.
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 10; ++k) failures[t] += !reg->Activate(1 + (t + k) % 2).ok();
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == std::vector<int>(4, 0));
  const int64_t winner = ActiveId(*reg);
  CHECK((winner == 1 || winner == 2));
  CHECK(StatusOf(*reg, 3) == VersionStatus::kRetired);
}

TEST_CASE_TEMPLATE("rounds: begin, update, get, list newest first, abort", Impl, Sqlite, Fake) {
  Impl impl;
  ManualClock clock(1'000);
  auto reg = impl.Open(&clock);
  CHECK(reg->ListRounds(10)->empty());
  auto r1 = reg->BeginRound("count");
  REQUIRE(r1.ok());
  CHECK(*r1 == 1);
  clock.Advance(500);
  auto r2 = reg->BeginRound("api");
  REQUIRE(r2.ok());
  CHECK(*r2 == 2);

  // A new round: started now, running, everything else at its default.
  RoundRecord rec = *reg->GetRound(*r1);
  CHECK(rec.id == *r1);
  CHECK(rec.started_us == 1'000);
  CHECK(rec.trigger == "count");
  CHECK(rec.outcome == RoundOutcome::kRunning);
  CHECK(!rec.ended_us.has_value());
  CHECK(rec.samples_new == 0);
  CHECK(rec.samples_replay == 0);
  CHECK(!rec.loss.has_value());
  CHECK(!rec.evaluation.has_value());
  CHECK(rec.reason.empty());
  CHECK(!rec.candidate_version.has_value());

  // Updates that keep the round open leave ended_us unset.
  rec.samples_new = 10;
  REQUIRE(reg->UpdateRound(rec).ok());
  CHECK(!reg->GetRound(*r1)->ended_us.has_value());
  CHECK(reg->GetRound(*r1)->samples_new == 10);
  rec.outcome = RoundOutcome::kQueued;
  REQUIRE(reg->UpdateRound(rec).ok());
  CHECK(!reg->GetRound(*r1)->ended_us.has_value());

  clock.Advance(500);
  rec.samples_new = 512;
  rec.samples_replay = 256;
  rec.loss = RoundLoss{300, 2, 1.2, 0.4, 0.7};
  rec.evaluation = testing::SampleEvaluation();
  rec.outcome = RoundOutcome::kPromoted;
  rec.reason = "better";
  rec.candidate_version = 3;
  REQUIRE(reg->UpdateRound(rec).ok());
  RoundRecord got = *reg->GetRound(*r1);
  CHECK(got.ended_us == 2'000);  // from the clock, because the round ended
  CHECK(got.started_us == 1'000);
  CHECK(got.trigger == "count");
  CHECK(got.samples_new == 512);
  CHECK(got.samples_replay == 256);
  CHECK(got.loss == rec.loss);
  CHECK(got.evaluation == rec.evaluation);
  CHECK(got.outcome == RoundOutcome::kPromoted);
  CHECK(got.reason == "better");
  CHECK(got.candidate_version == 3);
  // Every field is written, including ones a caller set on purpose.
  got.ended_us = 1'500;
  got.started_us = 900;
  got.trigger = "offline";
  got.candidate_version.reset();
  REQUIRE(reg->UpdateRound(got).ok());
  RoundRecord again = *reg->GetRound(*r1);
  CHECK(again.ended_us == 1'500);
  CHECK(again.started_us == 900);
  CHECK(again.trigger == "offline");
  CHECK(!again.candidate_version.has_value());

  auto r3 = reg->BeginRound("interval");
  REQUIRE(r3.ok());
  RoundRecord queued = *reg->GetRound(*r3);
  queued.outcome = RoundOutcome::kQueued;
  queued.ended_us = 1'234;  // odd, but kept by the abort below
  REQUIRE(reg->UpdateRound(queued).ok());
  auto r4 = reg->BeginRound("api");
  REQUIRE(r4.ok());
  CHECK(IdsOf(reg->ListRounds(10)) == IdList{4, 3, 2, 1});
  CHECK(IdsOf(reg->ListRounds(2)) == IdList{4, 3});
  CHECK(reg->ListRounds(0)->empty());

  clock.Advance(1'000);
  REQUIRE(reg->AbortRunningRounds("restart").ok());
  got = *reg->GetRound(*r2);  // was running
  CHECK(got.outcome == RoundOutcome::kAborted);
  CHECK(got.reason == "restart");
  CHECK(got.ended_us == 3'000);
  got = *reg->GetRound(*r3);  // was queued
  CHECK(got.outcome == RoundOutcome::kAborted);
  CHECK(got.ended_us == 1'234);
  CHECK(reg->GetRound(*r4)->outcome == RoundOutcome::kAborted);
  got = *reg->GetRound(*r1);  // finished rounds are left alone
  CHECK(got.outcome == RoundOutcome::kPromoted);
  CHECK(got.reason == "better");
  CHECK(got.ended_us == 1'500);
  REQUIRE(reg->AbortRunningRounds("again").ok());
  CHECK(reg->GetRound(*r2)->reason == "restart");  // aborted rounds are not open

  CHECK(reg->GetRound(99).status().code() == StatusCode::kNotFound);
  RoundRecord missing;
  missing.id = 99;
  CHECK(reg->UpdateRound(missing).code() == StatusCode::kNotFound);
  CHECK(IdsOf(reg->ListRounds(10)) == IdList{4, 3, 2, 1});
}

TEST_CASE_TEMPLATE("events: newest first, at most limit, only ids above after_id", Impl, Sqlite,
                   Fake) {
  Impl impl;
  ManualClock clock(10);
  auto reg = impl.Open(&clock);
  CHECK(reg->ListEvents(10)->empty());
  for (int i = 1; i <= 5; ++i) {
    clock.Advance(1);
    auto id = reg->LogEvent(i % 2 ? EventKind::kSwap : EventKind::kError, "event " + std::to_string(i),
                            i % 2 ? std::optional<int64_t>(i) : std::nullopt);
    REQUIRE(id.ok());
    CHECK(*id == i);
  }
  auto events = reg->ListEvents(3);
  REQUIRE(events.ok());
  CHECK(IdsOf(events) == IdList{5, 4, 3});
  REQUIRE(events->size() == 3);
  CHECK((*events)[0].kind == EventKind::kSwap);
  CHECK((*events)[0].message == "event 5");
  CHECK((*events)[0].version_id == 5);
  CHECK((*events)[0].time_us == 15);
  CHECK((*events)[1].kind == EventKind::kError);
  CHECK(!(*events)[1].version_id.has_value());
  CHECK((*events)[1].time_us == 14);

  CHECK(IdsOf(reg->ListEvents(100)) == IdList{5, 4, 3, 2, 1});
  CHECK(reg->ListEvents(0)->empty());
  // After a cursor: the events that follow it, oldest first, so a backlog
  // larger than the limit is paged through, not skipped.
  CHECK(IdsOf(reg->ListEventsAfter(3, 100)) == IdList{4, 5});
  CHECK(IdsOf(reg->ListEventsAfter(1, 2)) == IdList{2, 3});
  CHECK(IdsOf(reg->ListEventsAfter(0, 100)) == IdList{1, 2, 3, 4, 5});
  CHECK(reg->ListEventsAfter(5, 100)->empty());
  CHECK(reg->ListEventsAfter(1, 0)->empty());
  CHECK((*reg->ListEventsAfter(4, 1))[0].message == "event 5");
  // A poller with a small page sees every event exactly once.
  int64_t cursor = 0;
  IdList seen;
  for (int polls = 0; polls < 10; ++polls) {
    auto page = reg->ListEventsAfter(cursor, 2);
    REQUIRE(page.ok());
    if (page->empty()) break;
    for (const auto& e : *page) seen.push_back(e.id);
    cursor = page->back().id;
  }
  CHECK(seen == IdList{1, 2, 3, 4, 5});
  auto next = reg->LogEvent(EventKind::kConfigReload, "reloaded");
  REQUIRE(next.ok());
  CHECK(*next == 6);
  CHECK(IdsOf(reg->ListEventsAfter(cursor, 100)) == IdList{6});

  // Events, rounds and versions number their ids independently.
  auto round = reg->BeginRound("api");
  REQUIRE(round.ok());
  CHECK(*round == 1);
  auto version = reg->AddVersion(Version("v1"));
  REQUIRE(version.ok());
  CHECK(*version == 1);
}

TEST_CASE("the fake reports the schema version of a freshly opened real registry") {
  ManualClock clock;
  Sqlite sqlite;
  auto reg = sqlite.Open(&clock);
  testing::FakeRegistry fake(&clock);
  CHECK(fake.SchemaVersion() == reg->SchemaVersion());
  CHECK(fake.SchemaVersion() == testing::FakeRegistry::kSchemaVersion);
}

// The fault injection exists only in the fake; this pins what it does.
TEST_CASE("fake: injected write failures change nothing, like a rolled-back transaction") {
  ManualClock clock(100);
  testing::FakeRegistry reg(&clock);
  REQUIRE(reg.AddVersion(Version("v1")).ok());
  REQUIRE(reg.Activate(1).ok());
  auto round = reg.BeginRound("count");
  REQUIRE(round.ok());

  reg.FailNextWrites(4);
  // Argument checks come first and do not use up an injected failure.
  VersionRecord active = Version("x");
  active.status = VersionStatus::kActive;
  CHECK(reg.AddVersion(active).status().code() == StatusCode::kInvalidArgument);
  CHECK(reg.AddVersion(Version("v2")).status().code() == StatusCode::kIoError);
  CHECK(reg.LogEvent(EventKind::kSwap, "x").status().code() == StatusCode::kIoError);
  RoundRecord r = *reg.GetRound(*round);
  r.outcome = RoundOutcome::kFailed;
  CHECK(reg.UpdateRound(r).code() == StatusCode::kIoError);
  CHECK(reg.AbortRunningRounds("crash").code() == StatusCode::kIoError);
  CHECK(IdsOf(reg.ListVersions()) == IdList{1});
  CHECK(reg.ListEvents(10)->empty());
  CHECK(reg.GetRound(*round)->outcome == RoundOutcome::kRunning);

  // Failures used up: writes work again, and the failed inserts used no ids.
  auto v2 = reg.AddVersion(Version("v2"));
  REQUIRE(v2.ok());
  CHECK(*v2 == 2);
  auto e = reg.LogEvent(EventKind::kSwap, "x");
  REQUIRE(e.ok());
  CHECK(*e == 1);
  REQUIRE(reg.Activate(2).ok());
  CHECK(ActiveId(reg) == 2);
}

}  // namespace
}  // namespace distilld::storage
