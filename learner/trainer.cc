// See trainer.h.
#include "learner/trainer.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace distilld::learner {

int64_t StepsPerEpoch(int64_t rows, int64_t batch_size) {
  const int64_t bs = std::max<int64_t>(1, batch_size);
  return (rows + bs - 1) / bs;
}

Status RunTrainLoop(torch::jit::Module& model, torch::optim::Optimizer& optimizer, const Batch& data,
                    StepOptions so, std::mt19937_64& rng, const TrainLoopOptions& o) {
  if (o.steps <= 0) return Status::Ok();
  const int64_t n = data.size();
  if (n == 0) return Status::InvalidArgument("no training data");
  const int64_t bs = std::max<int64_t>(1, o.batch_size);
  const int64_t per_epoch = StepsPerEpoch(n, bs);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  for (int64_t step = 0; step < o.steps; ++step) {
    const int64_t pos = (step % per_epoch) * bs;
    if (o.before_step) RETURN_IF_ERROR(o.before_step(step, pos == 0));
    if (pos == 0) std::shuffle(order.begin(), order.end(), rng);
    const int64_t end = std::min(n, pos + bs);
    Batch b;
    try {
      torch::Tensor idx = torch::from_blob(order.data() + pos, {end - pos}, torch::kInt64);
      b.inputs = data.inputs.index_select(0, idx);
      b.labels = data.labels.index_select(0, idx);
      if (data.teacher_logits.defined()) b.teacher_logits = data.teacher_logits.index_select(0, idx);
      if (data.teacher_features.defined()) b.teacher_features = data.teacher_features.index_select(0, idx);
    } catch (const c10::Error& e) {
      return Status::InvalidArgument(std::string("mini-batch: ") + e.what_without_backtrace());
    }
    if (o.temperature) so.loss.temperature = o.temperature(step);
    if (o.learning_rate) {
      const double lr = o.learning_rate(step);
      for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
    }
    ASSIGN_OR_RETURN(StepStats stats, TrainStep(model, optimizer, b, so));
    if (o.after_step) o.after_step(step, stats);
  }
  return Status::Ok();
}

}  // namespace distilld::learner
