// Reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or not.
//
// Free functions, no shared state: thread-safe.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/sample.h"

namespace distilld::learner {

struct Dataset {
  torch::Tensor images;  // float32 [N, 1, H, W] in [0, 1]
  torch::Tensor labels;  // int64 [N]
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

// Directory holding the Debian dataset-fashion-mnist files.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// An idx3-ubyte image file -> float [N, 1, H, W] / 255. Corruption for a bad
// magic number, implausible sizes or a truncated file; IoError if unreadable.
Result<torch::Tensor> ReadIdxImages(const std::string& path);
// An idx1-ubyte label file -> int64 [N].
Result<torch::Tensor> ReadIdxLabels(const std::string& path);

// Reads <dir>/<split>-images-idx3-ubyte[.gz] and <split>-labels-idx1-ubyte[.gz]
// (split "train" or "t10k"), preferring the .gz name when both exist. Checks
// that counts match. `limit` > 0 keeps only the first `limit` samples.
Result<Dataset> LoadIdxDataset(const std::string& dir, const std::string& split, int64_t limit = 0);

// Rows [begin, end) of a dataset as storage samples (FP32, labelled).
std::vector<storage::Sample> DatasetToSamples(const Dataset& data, int64_t begin, int64_t end);

}  // namespace distilld::learner
