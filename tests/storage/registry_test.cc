#include "storage/registry.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <fstream>
#include <thread>

#include "tests/support/temp_dir.h"

namespace distilld::storage {
namespace {

std::unique_ptr<Registry> OpenRegistry(const std::string& path, Clock* clock) {
  RegistryOptions o;
  o.path = path;
  o.clock = clock;
  auto r = Registry::Open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

// Reads one integer with a raw connection, to look at what is on disk.
int64_t RawQuery(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK);
  int64_t v = -1;
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

int RawExec(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  sqlite3_close(db);
  return rc;
}

VersionRecord Version(const std::string& path) {
  VersionRecord v;
  v.path = path;
  v.sha256 = std::string(64, 'a');
  v.size_bytes = 1234;
  return v;
}

int CountActive(Registry& reg) {
  int n = 0;
  auto versions = reg.ListVersions();  // named: a temporary would die before the loop
  REQUIRE(versions.ok());
  for (auto& v : *versions) n += v.status == VersionStatus::kActive;
  return n;
}

TEST_CASE("migrates from an empty database, in WAL mode") {
  testing::TempDir dir;
  const std::string path = dir.str("registry.sqlite");
  { std::ofstream touch(path); }  // an empty file is an empty database
  ManualClock clock;
  {
    auto reg = OpenRegistry(path, &clock);
    CHECK(reg->SchemaVersion() == 2);
    CHECK(reg->ListVersions()->empty());
    CHECK(!reg->ActiveVersion()->has_value());
  }
  CHECK(RawQuery(path, "PRAGMA user_version") == 2);
  CHECK(RawQuery(path, "SELECT count(*) FROM sqlite_master WHERE name = 'versions_one_active'") == 1);
  // WAL mode is persistent in the file.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
  // Reopening an up-to-date database changes nothing.
  auto reg = OpenRegistry(path, &clock);
  CHECK(reg->SchemaVersion() == 2);
}

TEST_CASE("migrates forward from schema 1 and refuses a newer schema") {
  testing::TempDir dir;
  const std::string path = dir.str("registry.sqlite");
  ManualClock clock;
  {
    auto reg = OpenRegistry(path, &clock);
    REQUIRE(reg->AddVersion(Version("models/v1.pt")).ok());
  }
  // Roll the file back to schema 1 (drop what migration 2 added).
  REQUIRE(RawExec(path,
                  "DROP INDEX versions_one_active; DROP INDEX rounds_outcome; "
                  "PRAGMA user_version = 1;") == SQLITE_OK);
  {
    auto reg = OpenRegistry(path, &clock);
    CHECK(reg->SchemaVersion() == 2);
    CHECK(reg->GetVersion(1)->path == "models/v1.pt");  // data kept
  }
  CHECK(RawQuery(path, "SELECT count(*) FROM sqlite_master WHERE name = 'versions_one_active'") == 1);

  REQUIRE(RawExec(path, "PRAGMA user_version = 99") == SQLITE_OK);
  RegistryOptions o;
  o.path = path;
  auto r = Registry::Open(o);
  CHECK(r.status().code() == StatusCode::kFailedPrecondition);
  CHECK(Registry::Open(RegistryOptions{}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("versions: add, get, list, status, metrics") {
  testing::TempDir dir;
  ManualClock clock(5'000'000);
  auto reg = OpenRegistry(dir.str("r.sqlite"), &clock);
  VersionRecord v = Version("models/v000001.pt");
  v.metrics_json = R"({"accuracy": 0.8})";
  v.note = "it's \"quoted\"; DROP TABLE versions; --";  // bound, never spliced
  auto id1 = reg->AddVersion(v);
  REQUIRE(id1.ok());
  CHECK(*id1 == 1);
  VersionRecord v2 = Version("models/v000002.pt");
  v2.parent = 1;
  v2.round_id = 7;
  v2.created_us = 42;
  auto id2 = reg->AddVersion(v2);
  REQUIRE(id2.ok());
  CHECK(*id2 == 2);

  VersionRecord got = *reg->GetVersion(1);
  CHECK(got.path == v.path);
  CHECK(got.sha256 == v.sha256);
  CHECK(got.size_bytes == 1234);
  CHECK(got.created_us == 5'000'000);  // from the clock
  CHECK(got.status == VersionStatus::kCandidate);
  CHECK(got.metrics_json == v.metrics_json);
  CHECK(got.note == v.note);
  CHECK(!got.parent.has_value());
  got = *reg->GetVersion(2);
  CHECK(got.parent == 1);
  CHECK(got.round_id == 7);
  CHECK(got.created_us == 42);
  CHECK(reg->ListVersions()->size() == 2);
  CHECK(reg->GetVersion(3).status().code() == StatusCode::kNotFound);

  VersionRecord active = Version("x");
  active.status = VersionStatus::kActive;
  CHECK(reg->AddVersion(active).status().code() == StatusCode::kInvalidArgument);

  REQUIRE(reg->SetVersionStatus(2, VersionStatus::kRejected, "worse by 2%").ok());
  CHECK(reg->GetVersion(2)->status == VersionStatus::kRejected);
  CHECK(reg->GetVersion(2)->note == "worse by 2%");
  CHECK(reg->SetVersionStatus(1, VersionStatus::kActive, "").code() == StatusCode::kInvalidArgument);
  REQUIRE(reg->SetVersionMetrics(1, R"({"accuracy": 0.9})").ok());
  CHECK(reg->GetVersion(1)->metrics_json == R"({"accuracy": 0.9})");
  CHECK(reg->SetVersionMetrics(9, "{}").code() == StatusCode::kNotFound);

  CHECK(*ParseVersionStatus("retired") == VersionStatus::kRetired);
  CHECK(VersionStatusName(VersionStatus::kRejected) == "rejected");
  CHECK(!ParseVersionStatus("bogus").ok());
}

TEST_CASE("Activate keeps exactly one active version") {
  testing::TempDir dir;
  const std::string path = dir.str("r.sqlite");
  ManualClock clock;
  auto reg = OpenRegistry(path, &clock);
  for (int i = 1; i <= 3; ++i) REQUIRE(reg->AddVersion(Version("v" + std::to_string(i))).ok());
  REQUIRE(reg->Activate(1).ok());
  CHECK((*reg->ActiveVersion())->id == 1);
  CHECK(CountActive(*reg) == 1);
  REQUIRE(reg->Activate(2).ok());
  CHECK((*reg->ActiveVersion())->id == 2);
  CHECK(reg->GetVersion(1)->status == VersionStatus::kRetired);
  CHECK(CountActive(*reg) == 1);
  REQUIRE(reg->Activate(2).ok());  // idempotent
  CHECK(CountActive(*reg) == 1);

  // The active version cannot be retired directly (that would leave none).
  CHECK(reg->SetVersionStatus(2, VersionStatus::kRetired, "").code() ==
        StatusCode::kFailedPrecondition);
  // Failures leave the active version unchanged.
  CHECK(reg->Activate(99).code() == StatusCode::kNotFound);
  REQUIRE(reg->SetVersionStatus(3, VersionStatus::kRejected, "bad").ok());
  CHECK(reg->Activate(3).code() == StatusCode::kFailedPrecondition);
  CHECK((*reg->ActiveVersion())->id == 2);
  REQUIRE(reg->Activate(3, /*allow_rejected=*/true).ok());
  CHECK((*reg->ActiveVersion())->id == 3);
  CHECK(CountActive(*reg) == 1);

  // The schema itself refuses a second active row.
  CHECK(RawExec(path, "UPDATE versions SET status = 'active' WHERE id = 1") != SQLITE_OK);

  // Concurrent activations from several threads still leave exactly one.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k) CHECK(reg->Activate(1 + (t + k) % 2).ok());
    });
  }
  for (auto& th : threads) th.join();
  CHECK(CountActive(*reg) == 1);
}

TEST_CASE("rounds: begin, update, list, abort") {
  testing::TempDir dir;
  ManualClock clock(1'000);
  auto reg = OpenRegistry(dir.str("r.sqlite"), &clock);
  auto r1 = reg->BeginRound("count");
  REQUIRE(r1.ok());
  clock.Advance(500);
  auto r2 = reg->BeginRound("api");
  REQUIRE(r2.ok());
  RoundRecord rec = *reg->GetRound(*r1);
  CHECK(rec.started_us == 1'000);
  CHECK(rec.trigger == "count");
  CHECK(rec.outcome == "running");
  CHECK(!rec.ended_us.has_value());

  clock.Advance(500);
  rec.samples_new = 512;
  rec.samples_replay = 256;
  rec.loss_json = R"({"first": 1.2, "last": 0.4})";
  rec.eval_json = R"({"candidate": 0.81, "active": 0.8})";
  rec.outcome = "promoted";
  rec.reason = "better";
  rec.candidate_version = 3;
  REQUIRE(reg->UpdateRound(rec).ok());
  RoundRecord got = *reg->GetRound(*r1);
  CHECK(got.ended_us == 2'000);  // from the clock, because the round ended
  CHECK(got.samples_new == 512);
  CHECK(got.samples_replay == 256);
  CHECK(got.loss_json == rec.loss_json);
  CHECK(got.eval_json == rec.eval_json);
  CHECK(got.outcome == "promoted");
  CHECK(got.reason == "better");
  CHECK(got.candidate_version == 3);

  auto list = *reg->ListRounds(10);
  REQUIRE(list.size() == 2);
  CHECK(list[0].id == *r2);  // newest first
  CHECK(reg->ListRounds(1)->size() == 1);

  REQUIRE(reg->AbortRunningRounds("restart").ok());
  got = *reg->GetRound(*r2);
  CHECK(got.outcome == "aborted");
  CHECK(got.reason == "restart");
  CHECK(got.ended_us == 2'000);
  CHECK(reg->GetRound(*r1)->outcome == "promoted");  // finished rounds untouched
  CHECK(reg->GetRound(99).status().code() == StatusCode::kNotFound);
  RoundRecord missing;
  missing.id = 99;
  CHECK(reg->UpdateRound(missing).code() == StatusCode::kNotFound);
}

TEST_CASE("events: newest first, limit, after_id; everything survives reopen") {
  testing::TempDir dir;
  const std::string path = dir.str("r.sqlite");
  ManualClock clock(10);
  {
    auto reg = OpenRegistry(path, &clock);
    for (int i = 1; i <= 5; ++i) {
      clock.Advance(1);
      auto id = reg->LogEvent(i % 2 ? "swap" : "error", "event " + std::to_string(i),
                              i % 2 ? std::optional<int64_t>(i) : std::nullopt);
      REQUIRE(id.ok());
      CHECK(*id == i);
    }
    REQUIRE(reg->AddVersion(Version("v1")).ok());
    REQUIRE(reg->Activate(1).ok());
    REQUIRE(reg->BeginRound("interval").ok());
  }
  auto reg = OpenRegistry(path, &clock);
  auto events = *reg->ListEvents(3);
  REQUIRE(events.size() == 3);
  CHECK(events[0].id == 5);
  CHECK(events[0].kind == "swap");
  CHECK(events[0].message == "event 5");
  CHECK(events[0].version_id == 5);
  CHECK(events[0].time_us == 15);
  CHECK(events[1].id == 4);
  CHECK(!events[1].version_id.has_value());
  auto after = *reg->ListEvents(100, 3);
  REQUIRE(after.size() == 2);
  CHECK(after[0].id == 5);
  CHECK(after[1].id == 4);
  CHECK((*reg->ActiveVersion())->path == "v1");
  CHECK(reg->ListRounds(10)->size() == 1);
}

}  // namespace
}  // namespace distilld::storage
