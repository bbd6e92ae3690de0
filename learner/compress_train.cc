// See compress_train.h.
#include "learner/compress_train.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>

#include "learner/train_step.h"

namespace distilld::learner::internal {

Status RunKdSteps(torch::jit::Module& model, const Dataset& train, const torch::Tensor& teacher_logits,
                  const KdRunOptions& o) {
  if (o.steps <= 0) return Status::Ok();
  if (train.size() == 0) return Status::InvalidArgument("no training data");
  std::vector<torch::Tensor> params;
  for (const auto& p : model.parameters()) params.push_back(p);
  ASSIGN_OR_RETURN(auto opt, MakeOptimizer("adam", o.learning_rate, params));
  StepOptions so;
  so.loss = o.loss;
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  const int64_t n = train.size();
  const int64_t bs = std::max<int64_t>(1, o.batch_size);
  const int64_t every = std::max<int64_t>(1, o.steps / 100);
  torch::Tensor order;
  int64_t pos = n;
  for (int64_t s = 0; s < o.steps; ++s) {
    if (pos >= n) {
      order = torch::randperm(n, gen, torch::kLong);
      pos = 0;
    }
    torch::Tensor idx = order.slice(0, pos, std::min(n, pos + bs));
    pos += bs;
    Batch batch;
    batch.inputs = train.images.index_select(0, idx);
    batch.labels = train.labels.index_select(0, idx);
    if (teacher_logits.defined()) batch.teacher_logits = teacher_logits.index_select(0, idx);
    ASSIGN_OR_RETURN(StepStats st, TrainStep(model, *opt, batch, so));
    if (o.progress && ((s + 1) % every == 0 || s + 1 == o.steps)) o.progress({o.stage, s + 1, o.steps, st.loss});
  }
  model.eval();
  return Status::Ok();
}

}  // namespace distilld::learner::internal
