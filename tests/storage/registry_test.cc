#include "storage/registry.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <fstream>
#include <set>

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

TEST_CASE("round outcomes and event kinds have one stored name each, and the names parse back") {
  const RoundOutcome outcomes[] = {RoundOutcome::kRunning,  RoundOutcome::kQueued, RoundOutcome::kPromoted,
                                   RoundOutcome::kRejected, RoundOutcome::kAborted, RoundOutcome::kFailed,
                                   RoundOutcome::kSkipped};
  std::set<std::string> names;
  for (RoundOutcome o : outcomes) {
    names.insert(std::string(RoundOutcomeName(o)));
    auto back = ParseRoundOutcome(RoundOutcomeName(o));
    REQUIRE(back.ok());
    CHECK(*back == o);
  }
  CHECK(names.size() == std::size(outcomes));
  CHECK(IsOpen(RoundOutcome::kQueued));
  CHECK_FALSE(IsOpen(RoundOutcome::kSkipped));
  CHECK(ParseRoundOutcome("won").status().code() == StatusCode::kInvalidArgument);

  const EventKind kinds[] = {EventKind::kSwap,         EventKind::kActivate, EventKind::kRollback,
                             EventKind::kReject,       EventKind::kRoundAborted, EventKind::kError,
                             EventKind::kConfigReload, EventKind::kConfigRestartNeeded,
                             EventKind::kRetention};
  names.clear();
  for (EventKind k : kinds) {
    names.insert(std::string(EventKindName(k)));
    auto back = ParseEventKind(EventKindName(k));
    REQUIRE(back.ok());
    CHECK(*back == k);
  }
  CHECK(names.size() == std::size(kinds));
  // The names GET /v1/events has always shown.
  CHECK(EventKindName(EventKind::kRoundAborted) == "round_aborted");
  CHECK(EventKindName(EventKind::kConfigRestartNeeded) == "config_restart_needed");
  CHECK(ParseEventKind("party").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("migrates from an empty database, in WAL mode") {
  testing::TempDir dir;
  const std::string path = dir.str("registry.sqlite");
  { std::ofstream touch(path); }  // an empty file is an empty database
  ManualClock clock;
  {
    auto reg = OpenRegistry(path, &clock);
    CHECK(reg->SchemaVersion() == 3);
    CHECK(reg->ListVersions()->empty());
    CHECK(!reg->ActiveVersion()->has_value());
  }
  CHECK(RawQuery(path, "PRAGMA user_version") == 3);
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
  CHECK(reg->SchemaVersion() == 3);
}

TEST_CASE("migrates forward from schema 1 and refuses a newer schema") {
  testing::TempDir dir;
  const std::string path = dir.str("registry.sqlite");
  ManualClock clock;
  {
    auto reg = OpenRegistry(path, &clock);
    REQUIRE(reg->AddVersion(Version("models/v1.pt")).ok());
  }
  // Roll the file back to schema 1 (drop what migrations 2 and 3 added).
  REQUIRE(RawExec(path,
                  "DROP INDEX versions_one_active; DROP INDEX rounds_outcome; "
                  "ALTER TABLE versions DROP COLUMN file_removed_us; "
                  "PRAGMA user_version = 1;") == SQLITE_OK);
  {
    auto reg = OpenRegistry(path, &clock);
    CHECK(reg->SchemaVersion() == 3);
    CHECK(reg->GetVersion(1)->path == "models/v1.pt");  // data kept
    CHECK_FALSE(reg->GetVersion(1)->file_removed_us.has_value());
  }
  CHECK(RawQuery(path, "SELECT count(*) FROM sqlite_master WHERE name = 'versions_one_active'") == 1);

  REQUIRE(RawExec(path, "PRAGMA user_version = 99") == SQLITE_OK);
  RegistryOptions o;
  o.path = path;
  auto r = Registry::Open(o);
  CHECK(r.status().code() == StatusCode::kFailedPrecondition);
  CHECK(Registry::Open(RegistryOptions{}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("events: newest first, limit, after_id; everything survives reopen") {
  testing::TempDir dir;
  const std::string path = dir.str("r.sqlite");
  ManualClock clock(10);
  {
    auto reg = OpenRegistry(path, &clock);
    for (int i = 1; i <= 5; ++i) {
      clock.Advance(1);
      auto id = reg->LogEvent(i % 2 ? EventKind::kSwap : EventKind::kError, "event " + std::to_string(i),
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
  CHECK(events[0].kind == EventKind::kSwap);
  CHECK(events[0].message == "event 5");
  CHECK(events[0].version_id == 5);
  CHECK(events[0].time_us == 15);
  CHECK(events[1].id == 4);
  CHECK(!events[1].version_id.has_value());
  auto after = *reg->ListEventsAfter(3, 100);
  REQUIRE(after.size() == 2);
  CHECK(after[0].id == 4);
  CHECK(after[1].id == 5);
  CHECK((*reg->ActiveVersion())->path == "v1");
  CHECK(reg->ListRounds(10)->size() == 1);
}

}  // namespace
}  // namespace distilld::storage
