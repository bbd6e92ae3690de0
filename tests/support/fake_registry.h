// An in-memory storage::Registry for unit tests.
//
// Fast unit tests may use it instead of SQLite because it passes the same
// contract tests as the real registry (tests/storage/registry_contract_test.cc):
// the same ids, orderings, status transitions and error codes. Schema
// migrations, WAL mode and persistence across reopen do not exist here and
// stay covered by tests/storage/registry_test.cc.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/registry.h"

namespace distilld::testing {

// Registry over three id-ordered maps (versions, rounds, events).
//
// Thread-safety: every method may be called concurrently; one mutex guards all
// state, so each call is atomic, as each SQLite transaction of the real one
// is. Ownership: the registry owns its records; the clock is not owned and
// must outlive the registry.
class FakeRegistry final : public storage::Registry {
 public:
  // clock: the time of versions, rounds and events; nullptr means Clock::Real().
  explicit FakeRegistry(Clock* clock = nullptr);
  ~FakeRegistry() override = default;
  FakeRegistry(const FakeRegistry&) = delete;
  FakeRegistry& operator=(const FakeRegistry&) = delete;

  // The schema version a freshly opened real registry reports; the contract
  // test checks the two agree, so a new migration cannot go unnoticed here.
  static constexpr int kSchemaVersion = 3;
  int SchemaVersion() override { return kSchemaVersion; }

  Result<int64_t> AddVersion(const storage::VersionRecord& record) override;
  Result<int64_t> LatestVersionId() override;
  Result<storage::VersionRecord> GetVersion(int64_t id) override;
  Result<std::vector<storage::VersionRecord>> ListVersions() override;
  Status SetVersionStatus(int64_t id, storage::VersionStatus status,
                          std::string_view note) override;
  Status SetVersionMetrics(int64_t id, const storage::VersionMetrics& metrics) override;
  Status MarkFileRemoved(int64_t id) override;
  Status Activate(int64_t id, bool allow_rejected = false) override;
  Result<std::optional<storage::VersionRecord>> ActiveVersion() override;

  Result<int64_t> BeginRound(std::string_view trigger) override;
  Status UpdateRound(const storage::RoundRecord& record) override;
  Result<storage::RoundRecord> GetRound(int64_t id) override;
  Result<std::vector<storage::RoundRecord>> ListRounds(size_t limit) override;
  Status AbortRunningRounds(std::string_view reason) override;

  Result<int64_t> LogEvent(storage::EventKind kind, std::string_view message,
                           std::optional<int64_t> version_id = std::nullopt) override;
  Result<std::vector<storage::EventRecord>> ListEvents(size_t limit) override;
  Result<std::vector<storage::EventRecord>> ListEventsAfter(int64_t after_id, size_t limit) override;

  // Fault injection: the next `count` writing calls (add, set, activate,
  // begin/update/abort round, log event) fail with IoError and change
  // nothing, as a failed SQLite transaction does. Argument checks the real
  // registry makes before touching the database still come first.
  void FailNextWrites(int count);

 private:
  // True (and one fewer pending failure) if this write is to fail.
  bool TakeFailureLocked();

  Clock* const clock_;
  std::mutex mu_;
  // Ordered by id, which is the order of ListVersions and the reverse of
  // ListRounds and ListEvents. All guarded by mu_.
  std::map<int64_t, storage::VersionRecord> versions_;
  std::map<int64_t, storage::RoundRecord> rounds_;
  std::map<int64_t, storage::EventRecord> events_;
  // SQLite AUTOINCREMENT: ids start at 1 and a failed insert uses none.
  int64_t next_version_id_ = 1;
  int64_t next_round_id_ = 1;
  int64_t next_event_id_ = 1;
  int failures_pending_ = 0;
};

// The fake behind the interface, for code that only needs a Registry.
std::unique_ptr<storage::Registry> NewFakeRegistry(Clock* clock = nullptr);

}  // namespace distilld::testing
