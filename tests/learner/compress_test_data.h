// Shared by the compress_* tests: a small synthetic 4-class image task.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "learner/idx_dataset.h"

namespace distilld::learner::testdata {

// 1x8x8 images: class c lights up quadrant c by `signal` over uniform noise;
// with the defaults an MLP learns it in a few hundred steps, a weak signal
// leaves it a few percent short of perfect.
inline Dataset Quadrants(int64_t n, uint64_t seed, double noise = 0.6, double signal = 0.4) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  Dataset d;
  d.labels = torch::randint(0, 4, {n}, gen, torch::kLong);
  torch::Tensor img = torch::rand({n, 1, 8, 8}, gen) * noise;
  auto acc = d.labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = acc[i];
    img[i].slice(1, (c / 2) * 4, (c / 2) * 4 + 4).slice(2, (c % 2) * 4, (c % 2) * 4 + 4) += signal;
  }
  d.images = img.clamp(0.0, 1.0);
  return d;
}

}  // namespace distilld::learner::testdata
