// See compress_train.h.
#include "learner/compress_train.h"

#include <torch/torch.h>

#include <algorithm>
#include <random>

#include "learner/train_step.h"
#include "learner/trainer.h"

namespace distilld::learner::internal {

Status RunKdSteps(torch::jit::Module& model, const Dataset& train, const torch::Tensor& teacher_logits,
                  const KdRunOptions& o) {
  if (o.steps <= 0) return Status::Ok();
  if (train.size() == 0) return Status::InvalidArgument("no training data");
  std::vector<torch::Tensor> params;
  for (const auto& p : model.parameters()) params.push_back(p);
  ASSIGN_OR_RETURN(auto opt, MakeOptimizer(config::Optimizer::kAdam, o.learning_rate, params));
  StepOptions so;
  so.loss = o.loss;
  std::mt19937_64 rng(o.seed);
  TrainLoopOptions loop;
  loop.steps = o.steps;
  loop.batch_size = std::max<int64_t>(1, o.batch_size);
  const int64_t every = std::max<int64_t>(1, o.steps / 100);
  loop.after_step = [&](int64_t s, const StepStats& st) {
    if (o.progress && ((s + 1) % every == 0 || s + 1 == o.steps)) o.progress({o.stage, s + 1, o.steps, st.loss});
  };
  Batch data;
  data.inputs = train.images;
  data.labels = train.labels;
  data.teacher_logits = teacher_logits;
  RETURN_IF_ERROR(RunTrainLoop(model, *opt, data, so, rng, loop));
  model.eval();
  return Status::Ok();
}

}  // namespace distilld::learner::internal
