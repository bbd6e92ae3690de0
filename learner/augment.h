// Label-preserving image augmentation for replayed samples.
//
// A replay buffer of a few thousand samples is drawn many times per round;
// showing a shifted or mirrored view each time, labelled afresh by the
// teacher, gives the student more distinct examples of the old classes than
// the buffer holds. Only small shifts are offered: they keep the class of
// centred images. (Mirroring was measured on Fashion-MNIST and lowered
// final accuracy; larger shifts did too: docs/benchmarks-learner.md.)
//
// Thread-safety: pure functions; the caller owns the generator.
#pragma once

#include <torch/torch.h>

#include <random>

#include "common/status.h"

namespace distilld::learner {

struct ImageAugmentOptions {
  // Each image moves by dy, dx drawn uniformly from [-max_shift, max_shift]
  // pixels, edges replicated into the uncovered border. 0 = no shifts.
  int max_shift = 0;

  bool enabled() const { return max_shift > 0; }
};

// A new tensor of `images`' shape ([N, ..., H, W], rank >= 3, floating) with
// each row shifted independently. InvalidArgument for other
// ranks or dtypes, or max_shift < 0 or >= min(H, W).
Result<torch::Tensor> AugmentImages(const torch::Tensor& images, const ImageAugmentOptions& options,
                                    std::mt19937_64& rng);

}  // namespace distilld::learner
