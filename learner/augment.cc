#include "learner/augment.h"

#include <map>
#include <utility>
#include <vector>


namespace distilld::learner {

Result<torch::Tensor> AugmentImages(const torch::Tensor& images, const ImageAugmentOptions& options,
                                    std::mt19937_64& rng) {
  if (!images.defined() || images.dim() < 3) {
    return Status::InvalidArgument("image augmentation needs samples shaped [..., H, W]");
  }
  if (!images.is_floating_point()) return Status::InvalidArgument("image augmentation needs floating-point samples");
  const int64_t n = images.size(0), h = images.size(-2), w = images.size(-1);
  const int s = options.max_shift;
  if (s < 0 || s >= std::min(h, w)) {
    return Status::InvalidArgument("max_shift must be in [0, min(H, W))");
  }
  try {
    torch::NoGradGuard no_grad;
    // Flatten the leading per-sample dims into channels: replication_pad2d
    // takes [N, C, H, W].
    torch::Tensor x = images.reshape({n, -1, h, w});
    std::uniform_int_distribution<int> shift(-s, s);
    // Rows grouped by (dy, dx): one slice and copy per group rather than
    // per row.
    std::map<std::pair<int, int>, std::vector<int64_t>> groups;
    for (int64_t i = 0; i < n; ++i) {
      const int dy = s > 0 ? shift(rng) : 0;
      const int dx = s > 0 ? shift(rng) : 0;
      groups[{dy, dx}].push_back(i);
    }
    torch::Tensor padded = s > 0 ? torch::replication_pad2d(x, {s, s, s, s}) : x;
    torch::Tensor out = torch::empty_like(x);
    for (auto& [key, rows] : groups) {
      const auto [dy, dx] = key;
      torch::Tensor idx = torch::tensor(rows, torch::kInt64);
      // Output pixel (r, c) takes input pixel (r - dy, c - dx).
      torch::Tensor part = padded.index_select(0, idx).narrow(2, s - dy, h).narrow(3, s - dx, w);
      out.index_copy_(0, idx, part);
    }
    return out.reshape(images.sizes());
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("image augmentation: ") + e.what_without_backtrace());
  }
}

}  // namespace distilld::learner
