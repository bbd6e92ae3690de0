// Tiny students for daemon tests, built with learner::BuildModel.
#pragma once

#include <torch/script.h>

#include <string>

#include "learner/model/arch.h"
#include "learner/model/model_io.h"

namespace distilld::daemon::testing {

inline learner::ArchSpec TinySpec() {
  learner::ArchSpec spec;
  spec.kind = "mlp";
  spec.input_shape = {1, 4, 4};
  spec.classes = 3;
  spec.hidden = {8};
  return spec;
}

inline torch::jit::Module TinyModel(uint64_t seed) {
  auto m = learner::BuildModel(TinySpec(), seed);
  if (!m.ok()) std::abort();
  return std::move(m).value();
}

}  // namespace distilld::daemon::testing
