// Serving-time graph optimisation of a trained TorchScript model.
//
// OptimizeForServing = torch::jit::freeze (parameters become constants, the
// module is inlined and attributes folded) followed by
// torch::jit::optimize_for_inference (conv+batchnorm folding, linear+relu
// and conv+relu fusion where LibTorch has them, dropout removal). The result
// computes the same function; it cannot be trained and should not be saved
// as a learner version (save the unfrozen module instead).
//
// Free function, no shared state; thread-compatible (do not run it on a
// module another thread is using). The input module is not modified (freeze
// works on a clone).
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace distilld::learner {

struct OptimizeOptions {
  // Methods besides forward that must survive freezing (freeze drops every
  // method it is not told to keep). Default keeps `features`, which the
  // built-ins have; names the module lacks are ignored.
  std::vector<std::string> preserved_methods = {"features"};
  // Run optimize_for_inference after freeze. Default true; turn off to get
  // a frozen module only (e.g. when comparing what the fusion pass adds).
  bool optimize_for_inference = true;
};

// Internal (with LibTorch's message) if freezing or optimisation fails; the
// caller may then serve the unoptimised module, which is still correct.
Result<torch::jit::Module> OptimizeForServing(const torch::jit::Module& module,
                                              const OptimizeOptions& options = {});

}  // namespace distilld::learner
