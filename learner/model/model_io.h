// Model files: TorchScript modules saved atomically and loaded with a checksum.
//
// Every model distilld serves or trains is a torch::jit::Module, so a saved
// version loads unchanged in Python with torch.jit.load. Free functions, no
// shared state: thread-safe as far as LibTorch is.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace distilld::learner {

struct SavedModel {
  std::string path;
  std::string sha256;  // lowercase hex
  int64_t size_bytes = 0;
};

// Hex SHA-256 of a file's contents. IoError if unreadable.
Result<std::string> Sha256File(const std::string& path);

// Writes `module` to `path` via a temp file in the same directory: write,
// fsync, rename, fsync the directory. A crash leaves either the old file or
// the new one, never a torn one.
Result<SavedModel> SaveModelAtomic(const torch::jit::Module& module, const std::string& path);

// Loads a module on CPU in eval mode. If expected_sha256 is set the file's
// digest is checked first (Corruption on mismatch). A c10::Error becomes
// InvalidArgument naming the file; nothing throws.
Result<torch::jit::Module> LoadModel(const std::string& path,
                                     const std::optional<std::string>& expected_sha256 = std::nullopt);

// Whether `module` is a classifier of this signature: forward() on a batch of
// two zero samples of `input_shape` returns finite [2, classes] logits.
// InvalidArgument saying what it did instead (the caller names the file).
// Catches a model built for other inputs or another class count, and
// weights a damaged file turned into NaN, before anything registers it.
Status CheckSignature(torch::jit::Module& module, const std::vector<int64_t>& input_shape, int64_t classes);

}  // namespace distilld::learner
