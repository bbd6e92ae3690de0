// Retention of version files: which versions keep their model file on disk,
// so that a daemon promoting versions for months does not fill its disk.
// Registry rows are never deleted (a version's metrics, lineage and events
// outlive its file); a row whose file was deleted says so (file_removed_us)
// and cannot be activated again.
//
// Kept, always: the active version and any candidate (a round in flight).
// Kept by policy: the newest `keep_last` versions whatever their status, and
// the versions that were ever served (active or retired), all of them or the
// newest `keep_served`. Deleted: everything else, i.e. old rejected
// candidates and, with keep_served >= 0, old served versions.
//
// Crash safety: the row is marked before the file is unlinked, so a crash
// leaves at worst a stray file, never a row that names a missing file
// without saying so; RemoveStrayVersionFiles deletes strays at start.
//
// Free functions over a caller-owned registry; call them from one thread at
// a time, with no round saving a version (the learner thread between
// rounds, or start-up before it runs). No LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/registry.h"

namespace distilld::learner {

struct RetentionPolicy {
  // The newest N versions keep their file whatever their status (recent
  // rejected candidates stay inspectable). Default 20 (config
  // learner.keep_versions); at least 1.
  int64_t keep_last = 20;
  // Of the versions that were ever served, how many keep their file beyond
  // keep_last: -1 (default, config learner.keep_served_versions) keeps every
  // one, so any version that ever served can be rolled back to; N >= 0 keeps
  // the newest N. Set N where the learner promotes often and disk is small
  // (a file is about the size of the student's parameters).
  int64_t keep_served = -1;
};

struct RetentionReport {
  std::vector<int64_t> removed;  // versions whose file was deleted, by id
  int64_t bytes_freed = 0;       // their registered sizes
};

// Deletes the files of versions the policy does not keep (a file already
// missing counts as deleted). Stops at the first registry or file-system
// error, with the versions handled so far marked.
Result<RetentionReport> ApplyRetention(storage::Registry& registry, const std::string& state_dir,
                                       const RetentionPolicy& policy);

// ApplyRetention, plus a log line and a "retention" event when it deleted
// files; `when` ("after round 12", "at start") goes into both.
Result<RetentionReport> ApplyRetentionAndRecord(storage::Registry& registry, const std::string& state_dir,
                                                const RetentionPolicy& policy, const std::string& when);

// Start-up sweep of <state_dir>/models: deletes version files no kept row
// names (a row marked removed, a crash between the mark and the unlink; an
// id no row has, a crash between a round's save and its row) and the temp
// files of interrupted saves. Other files are left alone. Returns how many
// files it deleted.
Result<int64_t> RemoveStrayVersionFiles(storage::Registry& registry, const std::string& state_dir);

}  // namespace distilld::learner
