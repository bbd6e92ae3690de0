#include "learner/version_store.h"

#include <filesystem>

#include "common/crash_point.h"
#include "learner/model/model_io.h"
#include "learner/version_names.h"

namespace distilld::learner {

Result<std::unique_ptr<VersionStore>> VersionStore::Create(const Options& options) {
  if (options.registry == nullptr || options.state_dir.empty()) {
    return Status::InvalidArgument("a version store needs a registry and a state_dir");
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(options.state_dir) / "models", ec);
  if (ec) return Status::IoError("creating " + options.state_dir + "/models: " + ec.message());
  return std::unique_ptr<VersionStore>(new VersionStore(options));
}

std::string VersionStore::Name(int64_t id) { return VersionName(id); }

std::string VersionStore::RelativePath(int64_t id) { return VersionRelativePath(id); }

Result<storage::VersionRecord> VersionStore::Add(const torch::jit::Module& model, storage::VersionRecord record) {
  if (options_.free_space != nullptr) {
    // The file is about the size of the tensors it holds.
    uint64_t bytes = 64u << 10;
    for (const auto& t : model.parameters()) bytes += t.numel() * t.element_size();
    for (const auto& t : model.buffers()) bytes += t.numel() * t.element_size();
    RETURN_IF_ERROR(options_.free_space->Check(bytes).WithContext("saving a version"));
  }
  ASSIGN_OR_RETURN(int64_t latest, options_.registry->LatestVersionId());
  record.id = latest + 1;
  record.path = RelativePath(record.id);
  const std::string file = (std::filesystem::path(options_.state_dir) / record.path).string();
  ASSIGN_OR_RETURN(SavedModel saved, SaveModelAtomic(model, file));
  record.sha256 = saved.sha256;
  record.size_bytes = saved.size_bytes;
  // A round's version (the initial one is saved at start-up, before any round).
  if (record.round_id) CrashPoint("version.file_saved");
  ASSIGN_OR_RETURN(int64_t id, options_.registry->AddVersion(record));
  return options_.registry->GetVersion(id);
}

// The active version's file does not verify (a damaged disk, a hand edit):
// serve the newest other version that does rather than nothing.
Result<storage::VersionRecord> VersionStore::FallBackFrom(const storage::VersionRecord& bad, const Status& why) {
  ASSIGN_OR_RETURN(std::vector<storage::VersionRecord> all, options_.registry->ListVersions());
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->id == bad.id || it->status == storage::VersionStatus::kRejected || it->file_removed_us) continue;
    if (!Load(*it).ok()) continue;
    RETURN_IF_ERROR(options_.registry->Activate(it->id));
    const std::string message = "active version " + std::to_string(bad.id) + " failed verification at start (" +
                                why.message() + "); serving version " + std::to_string(it->id) +
                                ", the newest that verifies";
    (void)options_.registry->LogEvent(storage::EventKind::kRollback, message, it->id);
    return options_.registry->GetVersion(it->id);
  }
  return why.WithContext("active version " + std::to_string(bad.id) + ", and no other version verifies");
}

Result<torch::jit::Module> VersionStore::Load(const storage::VersionRecord& version) const {
  const std::string path = (std::filesystem::path(options_.state_dir) / version.path).string();
  auto m = LoadModel(path, version.sha256);
  if (!m.ok()) return m.status().WithContext("version " + std::to_string(version.id));
  return m;
}

Result<storage::VersionRecord> VersionStore::LoadOrCreateInitial(const InitialStudentOptions& options) {
  storage::Registry* registry = options_.registry;
  ASSIGN_OR_RETURN(std::optional<storage::VersionRecord> active, registry->ActiveVersion());
  if (active.has_value()) {
    Result<torch::jit::Module> loaded = Load(*active);
    if (loaded.ok()) return *active;
    return FallBackFrom(*active, loaded.status());
  }
  torch::jit::Module model;
  if (options.student_path.empty()) {
    ASSIGN_OR_RETURN(model, BuildModel(options.arch, options.seed));
  } else {
    // Checked before anything is registered: a bad file must not become
    // version 1, or fixing it and restarting would not help.
    Result<torch::jit::Module> loaded = LoadModel(options.student_path);
    if (!loaded.ok()) return loaded.status().WithContext("model.student");
    model = std::move(loaded).value();
    RETURN_IF_ERROR(CheckSignature(model, options.arch.input_shape, options.arch.classes)
                        .WithContext("model.student: " + options.student_path));
  }
  storage::VersionRecord rec;
  rec.status = storage::VersionStatus::kCandidate;
  rec.note = options.student_path.empty() ? "initial student built as " + options.arch.kind
                                          : "initial student from " + options.student_path;
  // A student built here has learned nothing yet: every class is new to it.
  // One from a file has a history distilld does not know; its label space is
  // inferred from the held-out set when it is first judged.
  if (options.student_path.empty()) rec.metrics.label_space = std::set<int64_t>{};
  ASSIGN_OR_RETURN(rec, Add(model, std::move(rec)));
  RETURN_IF_ERROR(registry->Activate(rec.id));
  (void)registry->LogEvent(storage::EventKind::kSwap, "initial student activated", rec.id);
  return registry->GetVersion(rec.id);
}

}  // namespace distilld::learner
