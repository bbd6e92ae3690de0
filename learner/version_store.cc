#include "learner/version_store.h"

#include <cstdio>
#include <filesystem>

#include "learner/model/model_io.h"

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

std::string VersionStore::Name(int64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "v%06lld", static_cast<long long>(id));
  return buf;
}

std::string VersionStore::RelativePath(int64_t id) { return "models/" + Name(id) + ".pt"; }

Result<storage::VersionRecord> VersionStore::Add(const torch::jit::Module& model, storage::VersionRecord record) {
  ASSIGN_OR_RETURN(int64_t latest, options_.registry->LatestVersionId());
  record.id = latest + 1;
  record.path = RelativePath(record.id);
  const std::string file = (std::filesystem::path(options_.state_dir) / record.path).string();
  ASSIGN_OR_RETURN(SavedModel saved, SaveModelAtomic(model, file));
  record.sha256 = saved.sha256;
  record.size_bytes = saved.size_bytes;
  ASSIGN_OR_RETURN(int64_t id, options_.registry->AddVersion(record));
  return options_.registry->GetVersion(id);
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
    ASSIGN_OR_RETURN(torch::jit::Module unused, Load(*active));
    (void)unused;
    return *active;
  }
  torch::jit::Module model;
  if (options.student_path.empty()) {
    ASSIGN_OR_RETURN(model, BuildModel(options.arch, options.seed));
  } else {
    ASSIGN_OR_RETURN(model, LoadModel(options.student_path));
  }
  storage::VersionRecord rec;
  rec.status = storage::VersionStatus::kCandidate;
  rec.note = options.student_path.empty() ? "initial student built as " + options.arch.kind
                                          : "initial student from " + options.student_path;
  // A student built here has learned nothing yet: every class is new to it.
  // One from a file has a history distilld does not know; its label space is
  // inferred from the held-out set when it is first judged.
  if (options.student_path.empty()) rec.metrics_json = "{\"label_space\":[]}";
  ASSIGN_OR_RETURN(rec, Add(model, std::move(rec)));
  RETURN_IF_ERROR(registry->Activate(rec.id));
  (void)registry->LogEvent(storage::EventKind::kSwap, "initial student activated", rec.id);
  return registry->GetVersion(rec.id);
}

}  // namespace distilld::learner
