// Registry: metadata of model versions, learner rounds and events, in SQLite.
//
// One database file in WAL mode, schema versioned with PRAGMA user_version and
// migrated forward on Open(). Every statement is prepared; request data is only
// ever bound as a parameter. Exactly one version is active at any time once one
// has been activated; Activate() changes it in one transaction.
//
// Thread-safety: all methods may be called concurrently (one connection
// guarded by a mutex). The request path must not call it: SQLite may block on
// fsync. The registry owns its connection.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/evaluation.h"

namespace distilld::storage {

enum class VersionStatus { kCandidate, kActive, kRetired, kRejected };
std::string_view VersionStatusName(VersionStatus status);  // "candidate", ...
Result<VersionStatus> ParseVersionStatus(std::string_view name);

struct VersionRecord {
  int64_t id = 0;                 // 0: AddVersion assigns the next (1, 2, ...)
  std::optional<int64_t> parent;  // version it was trained from
  std::string path;               // model file, relative to the state dir
  std::string sha256;             // hex digest of the file
  int64_t size_bytes = 0;
  int64_t created_us = 0;         // set by AddVersion from the clock when 0
  VersionStatus status = VersionStatus::kCandidate;
  VersionMetrics metrics;           // label space, and the evaluation that promoted it
  std::optional<int64_t> round_id;  // learner round that produced it
  std::string note;                 // e.g. reason for rejection
  // When the retention policy deleted the file (learner/version_retention.h);
  // unset while the file is kept. The row stays: the version's history,
  // metrics and lineage outlive its file.
  std::optional<int64_t> file_removed_us;
};

// How a learner round ended (or that it has not yet). Stored by name.
enum class RoundOutcome {
  kRunning,   // started, not ended
  kQueued,    // waiting behind another round
  kPromoted,  // its candidate is the active version
  kRejected,  // the gate (or publishing) refused its candidate
  kAborted,   // stopped, or its loss diverged; samples unconsumed unless diverged
  kFailed,    // an error; the learner backs off
  kSkipped,   // nothing left to read: an earlier round took the samples
};
std::string_view RoundOutcomeName(RoundOutcome outcome);  // "running", "queued", "promoted", ...
Result<RoundOutcome> ParseRoundOutcome(std::string_view name);
// Not ended yet: running or queued.
inline bool IsOpen(RoundOutcome outcome) { return outcome == RoundOutcome::kRunning || outcome == RoundOutcome::kQueued; }

// What an event records. Stored by name (GET /v1/events shows the name).
enum class EventKind {
  kSwap,                 // a version became the served one (promotion, first start)
  kActivate,             // activated through the API
  kRollback,             // rolled back through the API
  kReject,               // a candidate was refused
  kRoundAborted,         // a round stopped or diverged
  kError,                // a round failed
  kConfigReload,         // SIGHUP applied fields
  kConfigRestartNeeded,  // SIGHUP changed fields that need a restart
  kRetention,            // the retention policy deleted version files
};
std::string_view EventKindName(EventKind kind);  // "swap", "activate", "rollback", "reject", ...
Result<EventKind> ParseEventKind(std::string_view name);

struct RoundRecord {
  int64_t id = 0;  // assigned by BeginRound
  int64_t started_us = 0;
  std::optional<int64_t> ended_us;
  std::string trigger;             // "count", "interval", "api", "offline"
  int64_t samples_new = 0;         // new samples consumed
  int64_t samples_replay = 0;      // replayed samples mixed in
  std::optional<RoundLoss> loss;   // set once the round has trained
  std::optional<RoundEvaluation> evaluation;  // set once the round has evaluated
  RoundOutcome outcome = RoundOutcome::kRunning;
  std::string reason;
  std::optional<int64_t> candidate_version;
};

struct EventRecord {
  int64_t id = 0;
  int64_t time_us = 0;
  EventKind kind = EventKind::kSwap;
  std::string message;
  std::optional<int64_t> version_id;
};

struct RegistryOptions {
  // Path of the SQLite file; created with the schema if missing. Required.
  std::string path;
  // Busy timeout for a second process reading the file (e.g. the CLI).
  int busy_timeout_ms = 5000;
  // Not owned; default Clock::Real().
  Clock* clock = nullptr;
};

class Registry {
 public:
  static Result<std::unique_ptr<Registry>> Open(const RegistryOptions& options);
  virtual ~Registry() = default;

  // Current schema version (PRAGMA user_version) after migrations.
  virtual int SchemaVersion() = 0;

  // Inserts a version and returns its id: record.id when it is not 0
  // (AlreadyExists if taken), else the next one. A record with status
  // kActive is refused (use Activate).
  virtual Result<int64_t> AddVersion(const VersionRecord& record) = 0;
  // The highest version id ever added (0 = none); one indexed lookup.
  virtual Result<int64_t> LatestVersionId() = 0;
  virtual Result<VersionRecord> GetVersion(int64_t id) = 0;  // NotFound if absent
  virtual Result<std::vector<VersionRecord>> ListVersions() = 0;  // by id
  // Sets candidate/rejected/retired, with an optional note. kActive is refused.
  virtual Status SetVersionStatus(int64_t id, VersionStatus status, std::string_view note) = 0;
  virtual Status SetVersionMetrics(int64_t id, const VersionMetrics& metrics) = 0;
  // Records that the version's file is being deleted (sets file_removed_us;
  // a second call keeps the first time). FailedPrecondition for the active
  // version, NotFound for an unknown id. Call it before deleting the file:
  // a crash in between leaves a stray file, never a row without its file.
  virtual Status MarkFileRemoved(int64_t id) = 0;
  // In one transaction: the active version (if any) becomes retired and `id`
  // becomes active. NotFound for an unknown id; FailedPrecondition for a
  // rejected one unless allow_rejected, and for one whose file was removed.
  virtual Status Activate(int64_t id, bool allow_rejected = false) = 0;
  virtual Result<std::optional<VersionRecord>> ActiveVersion() = 0;

  virtual Result<int64_t> BeginRound(std::string_view trigger) = 0;
  // Writes every field of the record (matched by id); sets ended_us from the
  // clock when the outcome is not "running" or "queued" and ended_us is unset.
  virtual Status UpdateRound(const RoundRecord& record) = 0;
  virtual Result<RoundRecord> GetRound(int64_t id) = 0;
  virtual Result<std::vector<RoundRecord>> ListRounds(size_t limit) = 0;  // newest first
  // Rounds left "running" or "queued" by a crash are marked "aborted"
  // (called at startup).
  virtual Status AbortRunningRounds(std::string_view reason) = 0;

  virtual Result<int64_t> LogEvent(EventKind kind, std::string_view message,
                                   std::optional<int64_t> version_id = std::nullopt) = 0;
  // The newest `limit` events, newest first.
  virtual Result<std::vector<EventRecord>> ListEvents(size_t limit) = 0;
  // The `limit` events that follow after_id, oldest first: a poller that
  // passes the last id it saw gets every event exactly once, however many
  // arrived since (in pages of `limit`).
  virtual Result<std::vector<EventRecord>> ListEventsAfter(int64_t after_id, size_t limit) = 0;
};

}  // namespace distilld::storage
