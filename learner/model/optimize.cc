// See optimize.h.
#include "learner/model/optimize.h"

#include <torch/csrc/jit/api/module.h>

namespace distilld::learner {

Result<torch::jit::Module> OptimizeForServing(const torch::jit::Module& module, const OptimizeOptions& options) {
  try {
    torch::jit::Module copy = module.clone();
    copy.eval();
    std::vector<std::string> keep;
    for (const std::string& name : options.preserved_methods) {
      if (copy.find_method(name).has_value()) keep.push_back(name);
    }
    torch::jit::Module frozen = torch::jit::freeze(copy, keep, /*optimize_numerics=*/true);
    if (!options.optimize_for_inference) return frozen;
    // Preserved methods get the same passes as forward.
    return torch::jit::optimize_for_inference(frozen, keep);
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("optimize for serving: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("optimize for serving: ") + e.what());
  }
}

}  // namespace distilld::learner
