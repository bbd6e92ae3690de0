#include "tests/support/fake_registry.h"

#include <algorithm>
#include <utility>

namespace distilld::testing {
namespace {

using storage::EventRecord;
using storage::RoundRecord;
using storage::VersionRecord;
using storage::VersionStatus;

Status InjectedFailure(std::string_view what) {
  return Status::IoError(std::string(what) + ": injected write failure (FakeRegistry)");
}

Status VersionNotFound(int64_t id) { return Status::NotFound("version " + std::to_string(id)); }
Status RoundNotFound(int64_t id) { return Status::NotFound("round " + std::to_string(id)); }

// Newest first, at most `limit`, from an id-ordered map (ORDER BY id DESC LIMIT ?).
template <typename Map, typename Keep>
auto NewestFirst(const Map& records, size_t limit, Keep keep) {
  std::vector<typename Map::mapped_type> out;
  for (auto it = records.rbegin(); it != records.rend() && out.size() < limit; ++it) {
    if (!keep(it->first)) break;
    out.push_back(it->second);
  }
  return out;
}

}  // namespace

FakeRegistry::FakeRegistry(Clock* clock) : clock_(clock != nullptr ? clock : Clock::Real()) {}

bool FakeRegistry::TakeFailureLocked() {
  if (failures_pending_ <= 0) return false;
  --failures_pending_;
  return true;
}

Result<int64_t> FakeRegistry::AddVersion(const VersionRecord& record) {
  if (record.status == VersionStatus::kActive) {
    return Status::InvalidArgument("a new version cannot be active; use Activate");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("add version");
  // The real schema has parent REFERENCES versions(id) with foreign keys on:
  // SQLite refuses the row with a constraint error (FailedPrecondition).
  if (record.parent && !versions_.contains(*record.parent)) {
    return Status::FailedPrecondition("add version: FOREIGN KEY constraint failed (parent " +
                                      std::to_string(*record.parent) + " does not exist)");
  }
  if (record.id < 0) return Status::InvalidArgument("version id must be >= 0, got " + std::to_string(record.id));
  if (record.id > 0 && versions_.contains(record.id)) {
    return Status::AlreadyExists("version " + std::to_string(record.id) + " already exists");
  }
  VersionRecord stored = record;
  // Like AUTOINCREMENT: an explicit id moves the sequence past it.
  if (stored.id == 0) stored.id = next_version_id_;
  next_version_id_ = std::max(next_version_id_, stored.id + 1);
  if (stored.created_us == 0) stored.created_us = clock_->NowMicros();
  const int64_t id = stored.id;
  versions_.emplace(id, std::move(stored));
  return id;
}

Result<int64_t> FakeRegistry::LatestVersionId() {
  std::lock_guard<std::mutex> lock(mu_);
  return versions_.empty() ? 0 : versions_.rbegin()->first;
}

Result<VersionRecord> FakeRegistry::GetVersion(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = versions_.find(id);
  if (it == versions_.end()) return VersionNotFound(id);
  return it->second;
}

Result<std::vector<VersionRecord>> FakeRegistry::ListVersions() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<VersionRecord> out;
  out.reserve(versions_.size());
  for (const auto& [id, v] : versions_) out.push_back(v);
  return out;
}

Status FakeRegistry::SetVersionStatus(int64_t id, VersionStatus status, std::string_view note) {
  if (status == VersionStatus::kActive) {
    return Status::InvalidArgument("use Activate to make a version active");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("set version status");
  auto it = versions_.find(id);
  if (it == versions_.end()) return VersionNotFound(id);
  // Same rule as the real one: demoting the active version would leave none.
  if (it->second.status == VersionStatus::kActive) {
    return Status::FailedPrecondition("version " + std::to_string(id) +
                                      " is active; activate another version instead");
  }
  it->second.status = status;
  it->second.note = std::string(note);  // replaced even when empty, as the UPDATE does
  return Status::Ok();
}

Status FakeRegistry::SetVersionMetrics(int64_t id, const storage::VersionMetrics& metrics) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("set version metrics");
  auto it = versions_.find(id);
  if (it == versions_.end()) return VersionNotFound(id);
  it->second.metrics = metrics;
  return Status::Ok();
}

Status FakeRegistry::MarkFileRemoved(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("mark file removed");
  auto it = versions_.find(id);
  if (it == versions_.end()) return VersionNotFound(id);
  if (it->second.status == VersionStatus::kActive) {
    return Status::FailedPrecondition("version " + std::to_string(id) + " is active; its file is kept");
  }
  if (!it->second.file_removed_us) it->second.file_removed_us = clock_->NowMicros();
  return Status::Ok();
}

Status FakeRegistry::Activate(int64_t id, bool allow_rejected) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("activate");
  auto target = versions_.find(id);
  if (target == versions_.end()) return VersionNotFound(id);
  if (target->second.status == VersionStatus::kActive) return Status::Ok();
  if (target->second.status == VersionStatus::kRejected && !allow_rejected) {
    return Status::FailedPrecondition("version " + std::to_string(id) + " was rejected");
  }
  if (target->second.file_removed_us) {
    return Status::FailedPrecondition("version " + std::to_string(id) +
                                      "'s file was removed by the retention policy");
  }
  // Every check is done before the first change, so a refused activation
  // leaves the old active version in place, as the rolled-back transaction does.
  for (auto& [vid, v] : versions_) {
    if (v.status == VersionStatus::kActive) v.status = VersionStatus::kRetired;
  }
  target->second.status = VersionStatus::kActive;
  return Status::Ok();
}

Result<std::optional<VersionRecord>> FakeRegistry::ActiveVersion() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, v] : versions_) {
    if (v.status == VersionStatus::kActive) return std::optional<VersionRecord>(v);
  }
  return std::optional<VersionRecord>();
}

Result<int64_t> FakeRegistry::BeginRound(std::string_view trigger) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("begin round");
  RoundRecord r;  // its defaults are the schema's column defaults
  r.id = next_round_id_++;
  r.started_us = clock_->NowMicros();
  r.trigger = std::string(trigger);
  rounds_.emplace(r.id, r);
  return r.id;
}

Status FakeRegistry::UpdateRound(const RoundRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("update round");
  auto it = rounds_.find(record.id);
  if (it == rounds_.end()) return RoundNotFound(record.id);
  it->second = record;
  if (!it->second.ended_us && !storage::IsOpen(record.outcome)) {
    it->second.ended_us = clock_->NowMicros();
  }
  return Status::Ok();
}

Result<RoundRecord> FakeRegistry::GetRound(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = rounds_.find(id);
  if (it == rounds_.end()) return RoundNotFound(id);
  return it->second;
}

Result<std::vector<RoundRecord>> FakeRegistry::ListRounds(size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  return NewestFirst(rounds_, limit, [](int64_t) { return true; });
}

Status FakeRegistry::AbortRunningRounds(std::string_view reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("abort running rounds");
  const int64_t now = clock_->NowMicros();
  for (auto& [id, r] : rounds_) {
    if (!storage::IsOpen(r.outcome)) continue;
    r.outcome = storage::RoundOutcome::kAborted;
    r.reason = std::string(reason);
    if (!r.ended_us) r.ended_us = now;  // COALESCE(ended_us, now)
  }
  return Status::Ok();
}

Result<int64_t> FakeRegistry::LogEvent(storage::EventKind kind, std::string_view message,
                                       std::optional<int64_t> version_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TakeFailureLocked()) return InjectedFailure("log event");
  EventRecord e{next_event_id_++, clock_->NowMicros(), kind, std::string(message),
                version_id};
  events_.emplace(e.id, e);
  return e.id;
}

Result<std::vector<EventRecord>> FakeRegistry::ListEvents(size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  return NewestFirst(events_, limit, [](int64_t) { return true; });
}

Result<std::vector<EventRecord>> FakeRegistry::ListEventsAfter(int64_t after_id, size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<EventRecord> out;
  for (auto it = events_.upper_bound(after_id); it != events_.end() && out.size() < limit; ++it) {
    out.push_back(it->second);
  }
  return out;
}

void FakeRegistry::FailNextWrites(int count) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_pending_ = std::max(0, count);
}

std::unique_ptr<storage::Registry> NewFakeRegistry(Clock* clock) {
  return std::make_unique<FakeRegistry>(clock);
}

}  // namespace distilld::testing
