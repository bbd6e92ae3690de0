// VersionStore: the student versions on disk (models/v000012.pt under the
// state dir) and in the registry, kept in step. The one place that allocates
// version ids, names their files, saves and registers them, and loads them
// with their checksum checked.
//
// Add() takes the registry's latest id + 1, writes the file atomically under
// that id's name (model_io.h: temp file, fsync, rename), then adds the row
// with that id. A crash between the two leaves a file no row names; the next
// Add() takes the same id and replaces it. Two writers on one state dir are
// not supported (one learner per state dir): the second fails with
// AlreadyExists instead of mislabelling a file.
//
// Thread-safety: Load() and the accessors from any thread; Add() and
// LoadOrCreateInitial() from one thread at a time. Does not own the
// registry, which must outlive it.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "learner/model/arch.h"
#include "storage/free_space.h"
#include "storage/registry.h"

namespace distilld::learner {

struct InitialStudentOptions {
  std::string student_path;  // a user's TorchScript .pt; "" = build `arch`
  ArchSpec arch;
  uint64_t seed = 42;        // initial weights of a built student
};

class VersionStore {
 public:
  struct Options {
    std::string state_dir;                  // required; models/ is created in it
    storage::Registry* registry = nullptr;  // required
    // Add() refuses (ResourceExhausted) a save that would go below it. Not
    // owned; may be null (no floor).
    const storage::FreeSpaceFloor* free_space = nullptr;
  };
  static Result<std::unique_ptr<VersionStore>> Create(const Options& options);

  // "v000012": how logs, STATUS= and file names spell a version.
  static std::string Name(int64_t id);
  // "models/v000012.pt", relative to the state dir.
  static std::string RelativePath(int64_t id);

  // Saves `model` as a new version and registers `record` for it (its id,
  // path, sha256 and size_bytes are filled in; status must not be kActive).
  // Returns the registered record.
  Result<storage::VersionRecord> Add(const torch::jit::Module& model, storage::VersionRecord record);
  // Loads a registered version's file; Corruption if its checksum differs,
  // naming the version.
  Result<torch::jit::Module> Load(const storage::VersionRecord& version) const;
  // Start-up: returns the active version, its file verified (if it does
  // not verify, the newest other non-rejected version that does is
  // activated, with a "rollback" event saying why); if there is none,
  // builds (or loads, checking its signature against arch.input_shape and
  // arch.classes) the initial student, adds it, activates it and records a
  // "swap" event. A built student's metrics record an empty label
  // space (it has learned nothing); a user's file has none (inferred later).
  Result<storage::VersionRecord> LoadOrCreateInitial(const InitialStudentOptions& options);

  const std::string& state_dir() const { return options_.state_dir; }

 private:
  explicit VersionStore(Options options) : options_(std::move(options)) {}
  Result<storage::VersionRecord> FallBackFrom(const storage::VersionRecord& bad, const Status& why);
  Options options_;
};

}  // namespace distilld::learner
