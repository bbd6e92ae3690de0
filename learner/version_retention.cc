#include "learner/version_retention.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "common/log.h"
#include "learner/version_names.h"

namespace distilld::learner {
namespace {

namespace fs = std::filesystem;

bool EverServed(const storage::VersionRecord& v) {
  return v.status == storage::VersionStatus::kActive || v.status == storage::VersionStatus::kRetired;
}

// Deletes `path`; a file that is already gone is not an error.
Status RemoveFile(const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) return Status::IoError("removing " + path.string() + ": " + ec.message());
  return Status::Ok();
}

}  // namespace

Result<RetentionReport> ApplyRetention(storage::Registry& registry, const std::string& state_dir,
                                       const RetentionPolicy& policy) {
  if (policy.keep_last < 1) return Status::InvalidArgument("learner.keep_versions must be at least 1");
  ASSIGN_OR_RETURN(std::vector<storage::VersionRecord> versions, registry.ListVersions());
  std::set<int64_t> keep;
  int64_t newest = 0;
  int64_t served = 0;
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {  // newest first
    const bool in_last = newest++ < policy.keep_last;
    bool kept = in_last || it->status == storage::VersionStatus::kActive ||
                it->status == storage::VersionStatus::kCandidate;
    if (EverServed(*it)) {
      if (policy.keep_served < 0 || served < policy.keep_served) kept = true;
      ++served;
    }
    if (kept) keep.insert(it->id);
  }
  RetentionReport report;
  for (const storage::VersionRecord& v : versions) {
    if (keep.count(v.id) != 0 || v.file_removed_us.has_value()) continue;
    RETURN_IF_ERROR(registry.MarkFileRemoved(v.id).WithContext("retention of version " + std::to_string(v.id)));
    RETURN_IF_ERROR(RemoveFile(fs::path(state_dir) / v.path));
    report.removed.push_back(v.id);
    report.bytes_freed += v.size_bytes;
  }
  return report;
}

Result<RetentionReport> ApplyRetentionAndRecord(storage::Registry& registry, const std::string& state_dir,
                                                const RetentionPolicy& policy, const std::string& when) {
  ASSIGN_OR_RETURN(RetentionReport report, ApplyRetention(registry, state_dir, policy));
  if (report.removed.empty()) return report;
  std::string ids;
  for (int64_t id : report.removed) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
  const std::string message = "deleted the files of version(s) " + ids + " " + when + " (" +
                              std::to_string(report.bytes_freed) + " bytes; learner.keep_versions " +
                              std::to_string(policy.keep_last) + ", learner.keep_served_versions " +
                              std::to_string(policy.keep_served) + ")";
  LOG(kInfo) << "retention: " << message;
  (void)registry.LogEvent(storage::EventKind::kRetention, message);
  return report;
}

Result<int64_t> RemoveStrayVersionFiles(storage::Registry& registry, const std::string& state_dir) {
  const fs::path dir = fs::path(state_dir) / "models";
  std::error_code ec;
  if (!fs::exists(dir, ec)) return int64_t{0};
  ASSIGN_OR_RETURN(std::vector<storage::VersionRecord> versions, registry.ListVersions());
  std::map<std::string, bool> kept_by_file;  // file name -> its row keeps it
  for (const storage::VersionRecord& v : versions) {
    kept_by_file[fs::path(v.path).filename().string()] = !v.file_removed_us.has_value();
  }
  int64_t removed = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // model_io's atomic save writes ".<name>.tmp.<pid>.<n>" and renames it.
    const bool temp = name.size() > 1 && name[0] == '.' && name.find(".pt.tmp.") != std::string::npos &&
                      ParseVersionFileName(name.substr(1, name.find(".tmp.") - 1)).has_value();
    bool stray = temp;
    if (!temp && ParseVersionFileName(name).has_value()) {
      auto row = kept_by_file.find(name);
      stray = row == kept_by_file.end() || !row->second;
    }
    if (!stray) continue;
    RETURN_IF_ERROR(RemoveFile(it->path()));
    ++removed;
  }
  if (ec) return Status::IoError("listing " + dir.string() + ": " + ec.message());
  return removed;
}

}  // namespace distilld::learner
