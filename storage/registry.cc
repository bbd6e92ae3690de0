#include "storage/registry.h"

#include <sqlite3.h>

#include <mutex>

#include "common/enum_names.h"
#include "common/log.h"
#include "storage/evaluation_json.h"

namespace distilld::storage {
namespace {

// Forward migrations: kMigrations[i] takes the schema from user_version i to
// i + 1. Never edit a released entry; append a new one.
const char* const kMigrations[] = {
    // 0 -> 1: the three tables.
    R"sql(
CREATE TABLE versions (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  parent       INTEGER REFERENCES versions(id),
  path         TEXT NOT NULL,
  sha256       TEXT NOT NULL,
  size_bytes   INTEGER NOT NULL,
  created_us   INTEGER NOT NULL,
  status       TEXT NOT NULL CHECK (status IN ('candidate', 'active', 'retired', 'rejected')),
  metrics_json TEXT NOT NULL DEFAULT '{}',
  round_id     INTEGER,
  note         TEXT NOT NULL DEFAULT ''
);
CREATE TABLE rounds (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  started_us        INTEGER NOT NULL,
  ended_us          INTEGER,
  trigger_kind      TEXT NOT NULL,
  samples_new       INTEGER NOT NULL DEFAULT 0,
  samples_replay    INTEGER NOT NULL DEFAULT 0,
  loss_json         TEXT NOT NULL DEFAULT '{}',
  eval_json         TEXT NOT NULL DEFAULT '{}',
  outcome           TEXT NOT NULL DEFAULT 'running',
  reason            TEXT NOT NULL DEFAULT '',
  candidate_version INTEGER
);
CREATE TABLE events (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  time_us    INTEGER NOT NULL,
  kind       TEXT NOT NULL,
  message    TEXT NOT NULL,
  version_id INTEGER
);
)sql",
    // 1 -> 2: the database itself refuses a second active version, and the
    // startup query for running rounds does not scan.
    R"sql(
CREATE UNIQUE INDEX versions_one_active ON versions(status) WHERE status = 'active';
CREATE INDEX rounds_outcome ON rounds(outcome);
)sql",
    // 2 -> 3: the retention policy deletes old version files; the row says when.
    R"sql(
ALTER TABLE versions ADD COLUMN file_removed_us INTEGER;
)sql",
};
constexpr int kSchemaVersion = static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));

const char kVersionColumns[] =
    "id, parent, path, sha256, size_bytes, created_us, status, metrics_json, round_id, note, "
    "file_removed_us";
const char kRoundColumns[] =
    "id, started_us, ended_us, trigger_kind, samples_new, samples_replay, loss_json, eval_json, "
    "outcome, reason, candidate_version";

Status SqlError(sqlite3* db, int rc, std::string_view what) {
  std::string m = std::string(what) + ": " + sqlite3_errstr(rc);
  if (db != nullptr && sqlite3_errmsg(db) != nullptr) m += std::string(" (") + sqlite3_errmsg(db) + ")";
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Status::Unavailable(m);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return Status::Corruption(m);
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY: return Status::IoError(m);
    case SQLITE_CONSTRAINT: return Status::FailedPrecondition(m);
    default: return Status::Internal(m);
  }
}

// One prepared statement; parameters are bound, never spliced into SQL.
class Stmt {
 public:
  Stmt(sqlite3* db, std::string_view sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Status prepared() const { return rc_ == SQLITE_OK ? Status::Ok() : SqlError(db_, rc_, "prepare"); }

  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, std::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, const std::optional<int64_t>& v) {
    if (v) {
      sqlite3_bind_int64(stmt_, i, *v);
    } else {
      sqlite3_bind_null(stmt_, i);
    }
  }
  // Returns true for a row, false when done; errors go to *status.
  bool Step(Status* status) {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) *status = SqlError(db_, rc, "step");
    return false;
  }
  Status Run() {
    Status st;
    while (Step(&st)) {
    }
    return st;
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::optional<int64_t> OptInt(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(stmt_, col);
  }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, col))
             : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

class SqliteRegistry final : public Registry {
 public:
  SqliteRegistry(sqlite3* db, Clock* clock) : db_(db), clock_(clock) {}
  ~SqliteRegistry() override { sqlite3_close_v2(db_); }

  Status Init() {
    std::lock_guard<std::mutex> lock(mu_);
    // journal_mode returns the mode it ended up in; WAL can silently fail
    // (e.g. on some network file systems), so check.
    {
      Stmt s(db_, "PRAGMA journal_mode=WAL");
      RETURN_IF_ERROR(s.prepared());
      Status st;
      if (!s.Step(&st)) return st.ok() ? Status::Internal("journal_mode returned nothing") : st;
      if (s.Text(0) != "wal") return Status::IoError("cannot enable WAL mode: got " + s.Text(0));
    }
    RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
    RETURN_IF_ERROR(Exec("PRAGMA foreign_keys=ON"));
    int version = ReadUserVersion();
    if (version < 0) return Status::Internal("cannot read user_version");
    if (version > kSchemaVersion) {
      return Status::FailedPrecondition("registry schema version " + std::to_string(version) +
                                        " is newer than this build (" +
                                        std::to_string(kSchemaVersion) + ")");
    }
    for (int v = version; v < kSchemaVersion; ++v) {
      RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
      Status st = Exec(kMigrations[v]);
      // PRAGMA takes no parameters; the value is a constant from this file.
      if (st.ok()) st = Exec("PRAGMA user_version=" + std::to_string(v + 1));
      if (st.ok()) st = Exec("COMMIT");
      if (!st.ok()) {
        (void)Exec("ROLLBACK");
        return st.WithContext("migration to schema " + std::to_string(v + 1));
      }
      LOG(kInfo) << "registry: migrated schema to version " << v + 1;
    }
    return Status::Ok();
  }

  int SchemaVersion() override {
    std::lock_guard<std::mutex> lock(mu_);
    return ReadUserVersion();
  }

  Result<int64_t> AddVersion(const VersionRecord& r) override {
    if (r.status == VersionStatus::kActive) {
      return Status::InvalidArgument("a new version cannot be active; use Activate");
    }
    if (r.id < 0) return Status::InvalidArgument("version id must be >= 0, got " + std::to_string(r.id));
    std::lock_guard<std::mutex> lock(mu_);
    if (r.id > 0) {
      Result<VersionRecord> taken = GetVersionLocked(r.id);
      if (taken.ok()) return Status::AlreadyExists("version " + std::to_string(r.id) + " already exists");
      if (taken.status().code() != StatusCode::kNotFound) return taken.status();
    }
    // NULL id: SQLite assigns the next one.
    Stmt s(db_,
           "INSERT INTO versions (id, parent, path, sha256, size_bytes, created_us, status, "
           "metrics_json, round_id, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, r.id > 0 ? std::optional<int64_t>(r.id) : std::nullopt);
    s.Bind(2, r.parent);
    s.Bind(3, r.path);
    s.Bind(4, r.sha256);
    s.Bind(5, r.size_bytes);
    s.Bind(6, r.created_us != 0 ? r.created_us : clock_->NowMicros());
    s.Bind(7, VersionStatusName(r.status));
    s.Bind(8, EncodeVersionMetrics(r.metrics));
    s.Bind(9, r.round_id);
    s.Bind(10, r.note);
    RETURN_IF_ERROR(s.Run().WithContext("add version"));
    return sqlite3_last_insert_rowid(db_);
  }

  Result<int64_t> LatestVersionId() override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "SELECT COALESCE(MAX(id), 0) FROM versions");
    RETURN_IF_ERROR(s.prepared());
    Status st;
    if (!s.Step(&st)) return st.ok() ? Status::Internal("latest version id: no row") : st;
    return s.Int(0);
  }

  Result<VersionRecord> GetVersion(int64_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    return GetVersionLocked(id);
  }

  Result<std::vector<VersionRecord>> ListVersions() override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, std::string("SELECT ") + kVersionColumns + " FROM versions ORDER BY id");
    RETURN_IF_ERROR(s.prepared());
    std::vector<VersionRecord> out;
    Status st;
    while (s.Step(&st)) {
      ASSIGN_OR_RETURN(VersionRecord r, ReadVersion(s));
      out.push_back(std::move(r));
    }
    RETURN_IF_ERROR(st);
    return out;
  }

  Status SetVersionStatus(int64_t id, VersionStatus status, std::string_view note) override {
    if (status == VersionStatus::kActive) {
      return Status::InvalidArgument("use Activate to make a version active");
    }
    std::lock_guard<std::mutex> lock(mu_);
    ASSIGN_OR_RETURN(VersionRecord current, GetVersionLocked(id));
    // Retiring the active version directly would leave none active.
    if (current.status == VersionStatus::kActive) {
      return Status::FailedPrecondition("version " + std::to_string(id) +
                                        " is active; activate another version instead");
    }
    Stmt s(db_, "UPDATE versions SET status = ?, note = ? WHERE id = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, VersionStatusName(status));
    s.Bind(2, note);
    s.Bind(3, id);
    return s.Run();
  }

  Status SetVersionMetrics(int64_t id, const VersionMetrics& metrics) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "UPDATE versions SET metrics_json = ? WHERE id = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, EncodeVersionMetrics(metrics));
    s.Bind(2, id);
    RETURN_IF_ERROR(s.Run());
    if (sqlite3_changes(db_) == 0) return Status::NotFound("version " + std::to_string(id));
    return Status::Ok();
  }

  Status MarkFileRemoved(int64_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    ASSIGN_OR_RETURN(VersionRecord current, GetVersionLocked(id));
    if (current.status == VersionStatus::kActive) {
      return Status::FailedPrecondition("version " + std::to_string(id) + " is active; its file is kept");
    }
    if (current.file_removed_us) return Status::Ok();
    Stmt s(db_, "UPDATE versions SET file_removed_us = ? WHERE id = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, clock_->NowMicros());
    s.Bind(2, id);
    return s.Run();
  }

  Status Activate(int64_t id, bool allow_rejected) override {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status st = ActivateInTransaction(id, allow_rejected);
    if (st.ok()) st = Exec("COMMIT");
    if (!st.ok()) (void)Exec("ROLLBACK");
    return st;
  }

  Result<std::optional<VersionRecord>> ActiveVersion() override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, std::string("SELECT ") + kVersionColumns + " FROM versions WHERE status = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, VersionStatusName(VersionStatus::kActive));
    Status st;
    if (!s.Step(&st)) {
      RETURN_IF_ERROR(st);
      return std::optional<VersionRecord>();
    }
    ASSIGN_OR_RETURN(VersionRecord r, ReadVersion(s));
    return std::optional<VersionRecord>(std::move(r));
  }

  Result<int64_t> BeginRound(std::string_view trigger) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "INSERT INTO rounds (started_us, trigger_kind) VALUES (?, ?)");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, clock_->NowMicros());
    s.Bind(2, trigger);
    RETURN_IF_ERROR(s.Run().WithContext("begin round"));
    return sqlite3_last_insert_rowid(db_);
  }

  Status UpdateRound(const RoundRecord& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<int64_t> ended = r.ended_us;
    if (!ended && !IsOpen(r.outcome)) ended = clock_->NowMicros();
    Stmt s(db_,
           "UPDATE rounds SET started_us = ?, ended_us = ?, trigger_kind = ?, samples_new = ?, "
           "samples_replay = ?, loss_json = ?, eval_json = ?, outcome = ?, reason = ?, "
           "candidate_version = ? WHERE id = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, r.started_us);
    s.Bind(2, ended);
    s.Bind(3, r.trigger);
    s.Bind(4, r.samples_new);
    s.Bind(5, r.samples_replay);
    s.Bind(6, r.loss ? EncodeRoundLoss(*r.loss) : std::string("{}"));
    s.Bind(7, r.evaluation ? EncodeRoundEvaluation(*r.evaluation) : std::string("{}"));
    s.Bind(8, RoundOutcomeName(r.outcome));
    s.Bind(9, r.reason);
    s.Bind(10, r.candidate_version);
    s.Bind(11, r.id);
    RETURN_IF_ERROR(s.Run());
    if (sqlite3_changes(db_) == 0) return Status::NotFound("round " + std::to_string(r.id));
    return Status::Ok();
  }

  Result<RoundRecord> GetRound(int64_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, std::string("SELECT ") + kRoundColumns + " FROM rounds WHERE id = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id);
    Status st;
    if (!s.Step(&st)) {
      RETURN_IF_ERROR(st);
      return Status::NotFound("round " + std::to_string(id));
    }
    return ReadRound(s);
  }

  Result<std::vector<RoundRecord>> ListRounds(size_t limit) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, std::string("SELECT ") + kRoundColumns + " FROM rounds ORDER BY id DESC LIMIT ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, ClampLimit(limit));
    std::vector<RoundRecord> out;
    Status st;
    while (s.Step(&st)) {
      ASSIGN_OR_RETURN(RoundRecord r, ReadRound(s));
      out.push_back(std::move(r));
    }
    RETURN_IF_ERROR(st);
    return out;
  }

  Status AbortRunningRounds(std::string_view reason) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_,
           "UPDATE rounds SET outcome = 'aborted', reason = ?, ended_us = COALESCE(ended_us, ?) "
           "WHERE outcome IN ('running', 'queued')");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, reason);
    s.Bind(2, clock_->NowMicros());
    return s.Run();
  }

  Result<int64_t> LogEvent(EventKind kind, std::string_view message,
                           std::optional<int64_t> version_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "INSERT INTO events (time_us, kind, message, version_id) VALUES (?, ?, ?, ?)");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, clock_->NowMicros());
    s.Bind(2, EventKindName(kind));
    s.Bind(3, message);
    s.Bind(4, version_id);
    RETURN_IF_ERROR(s.Run().WithContext("log event"));
    return sqlite3_last_insert_rowid(db_);
  }

  Result<std::vector<EventRecord>> ListEvents(size_t limit) override {
    return QueryEvents("SELECT id, time_us, kind, message, version_id FROM events ORDER BY id DESC LIMIT ?2",
                       0, limit);
  }

  Result<std::vector<EventRecord>> ListEventsAfter(int64_t after_id, size_t limit) override {
    return QueryEvents(
        "SELECT id, time_us, kind, message, version_id FROM events WHERE id > ?1 ORDER BY id ASC LIMIT ?2", after_id,
        limit);
  }

 private:
  // ?1 is after_id, ?2 the limit.
  Result<std::vector<EventRecord>> QueryEvents(const char* sql, int64_t after_id, size_t limit) {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, sql);
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, after_id);  // with only ?2 in the SQL, ?1 exists unused
    s.Bind(2, ClampLimit(limit));
    std::vector<EventRecord> out;
    Status st;
    while (s.Step(&st)) {
      ASSIGN_OR_RETURN(EventKind kind, ParseEventKind(s.Text(2)));
      out.push_back({s.Int(0), s.Int(1), kind, s.Text(3), s.OptInt(4)});
    }
    RETURN_IF_ERROR(st);
    return out;
  }

  static int64_t ClampLimit(size_t limit) {
    return limit > static_cast<size_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(limit);
  }

  // Static SQL only (schema, pragmas, transaction control).
  Status Exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc == SQLITE_OK) return Status::Ok();
    Status st = SqlError(db_, rc, err ? err : "exec");
    sqlite3_free(err);
    return st;
  }

  int ReadUserVersion() {
    Stmt s(db_, "PRAGMA user_version");
    Status st;
    if (!s.prepared().ok() || !s.Step(&st)) return -1;
    return static_cast<int>(s.Int(0));
  }

  Status ActivateInTransaction(int64_t id, bool allow_rejected) {
    ASSIGN_OR_RETURN(VersionRecord target, GetVersionLocked(id));
    if (target.status == VersionStatus::kActive) return Status::Ok();
    if (target.status == VersionStatus::kRejected && !allow_rejected) {
      return Status::FailedPrecondition("version " + std::to_string(id) + " was rejected");
    }
    if (target.file_removed_us) {
      return Status::FailedPrecondition("version " + std::to_string(id) +
                                        "'s file was removed by the retention policy");
    }
    {
      Stmt s(db_, "UPDATE versions SET status = ? WHERE status = ?");
      RETURN_IF_ERROR(s.prepared());
      s.Bind(1, VersionStatusName(VersionStatus::kRetired));
      s.Bind(2, VersionStatusName(VersionStatus::kActive));
      RETURN_IF_ERROR(s.Run());
    }
    Stmt s(db_, "UPDATE versions SET status = ? WHERE id = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, VersionStatusName(VersionStatus::kActive));
    s.Bind(2, id);
    return s.Run();
  }

  Result<VersionRecord> GetVersionLocked(int64_t id) {
    Stmt s(db_, std::string("SELECT ") + kVersionColumns + " FROM versions WHERE id = ?");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id);
    Status st;
    if (!s.Step(&st)) {
      RETURN_IF_ERROR(st);
      return Status::NotFound("version " + std::to_string(id));
    }
    return ReadVersion(s);
  }

  static Result<VersionRecord> ReadVersion(const Stmt& s) {
    VersionRecord r;
    r.id = s.Int(0);
    r.parent = s.OptInt(1);
    r.path = s.Text(2);
    r.sha256 = s.Text(3);
    r.size_bytes = s.Int(4);
    r.created_us = s.Int(5);
    ASSIGN_OR_RETURN(r.status, ParseVersionStatus(s.Text(6)));
    r.metrics = DecodeVersionMetrics(s.Text(7));
    r.round_id = s.OptInt(8);
    r.note = s.Text(9);
    r.file_removed_us = s.OptInt(10);
    return r;
  }

  static Result<RoundRecord> ReadRound(const Stmt& s) {
    RoundRecord r;
    r.id = s.Int(0);
    r.started_us = s.Int(1);
    r.ended_us = s.OptInt(2);
    r.trigger = s.Text(3);
    r.samples_new = s.Int(4);
    r.samples_replay = s.Int(5);
    r.loss = DecodeRoundLoss(s.Text(6));
    r.evaluation = DecodeRoundEvaluation(s.Text(7));
    ASSIGN_OR_RETURN(r.outcome, ParseRoundOutcome(s.Text(8)));
    r.reason = s.Text(9);
    r.candidate_version = s.OptInt(10);
    return r;
  }

  std::mutex mu_;
  sqlite3* db_;  // guarded by mu_
  Clock* clock_;
};

}  // namespace

namespace {

constexpr EnumNames<VersionStatus, 4> kVersionStatusNames{{{VersionStatus::kCandidate, "candidate"},
                                                           {VersionStatus::kActive, "active"},
                                                           {VersionStatus::kRetired, "retired"},
                                                           {VersionStatus::kRejected, "rejected"}}};
constexpr EnumNames<RoundOutcome, 7> kRoundOutcomeNames{{{RoundOutcome::kRunning, "running"},
                                                         {RoundOutcome::kQueued, "queued"},
                                                         {RoundOutcome::kPromoted, "promoted"},
                                                         {RoundOutcome::kRejected, "rejected"},
                                                         {RoundOutcome::kAborted, "aborted"},
                                                         {RoundOutcome::kFailed, "failed"},
                                                         {RoundOutcome::kSkipped, "skipped"}}};
constexpr EnumNames<EventKind, 9> kEventKindNames{{{EventKind::kSwap, "swap"},
                                                   {EventKind::kActivate, "activate"},
                                                   {EventKind::kRollback, "rollback"},
                                                   {EventKind::kReject, "reject"},
                                                   {EventKind::kRoundAborted, "round_aborted"},
                                                   {EventKind::kError, "error"},
                                                   {EventKind::kConfigReload, "config_reload"},
                                                   {EventKind::kConfigRestartNeeded, "config_restart_needed"},
                                                   {EventKind::kRetention, "retention"}}};

}  // namespace

std::string_view VersionStatusName(VersionStatus status) { return EnumName(kVersionStatusNames, status); }
Result<VersionStatus> ParseVersionStatus(std::string_view name) {
  return ParseEnum(kVersionStatusNames, name, "version status");
}
std::string_view RoundOutcomeName(RoundOutcome outcome) { return EnumName(kRoundOutcomeNames, outcome); }
Result<RoundOutcome> ParseRoundOutcome(std::string_view name) {
  return ParseEnum(kRoundOutcomeNames, name, "round outcome");
}
std::string_view EventKindName(EventKind kind) { return EnumName(kEventKindNames, kind); }
Result<EventKind> ParseEventKind(std::string_view name) { return ParseEnum(kEventKindNames, name, "event kind"); }

Result<std::unique_ptr<Registry>> Registry::Open(const RegistryOptions& options) {
  if (options.path.empty()) return Status::InvalidArgument("registry: path is required");
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    Status st = SqlError(db, rc, "open registry " + options.path);
    sqlite3_close_v2(db);
    return st;
  }
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  auto reg = std::make_unique<SqliteRegistry>(db, options.clock ? options.clock : Clock::Real());
  RETURN_IF_ERROR(reg->Init().WithContext("registry " + options.path));
  return std::unique_ptr<Registry>(std::move(reg));
}

}  // namespace distilld::storage
