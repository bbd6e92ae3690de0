// See round.h: the training step of a round (recycling, the main KD pass
// over new and replayed samples, the optional class-balanced fine-tune).
#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include "learner/round.h"
#include "learner/round_settings.h"
#include "learner/trainer.h"
#include "learner/weight_average.h"

// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/crash_point.h"
#include "common/log.h"

namespace distilld::learner::internal {

Status RoundRunner::BeforeStep(RoundHooks& hooks) {
  hooks.Beat();
  RETURN_IF_ERROR(hooks.CheckStop());
  return hooks.YieldToInference();
}

Result<TrainedCandidate> RoundRunner::Train(RoundState* rs, RoundHooks& hooks) {
  const config::LearnerConfig& l = o_.learner;
  ASSIGN_OR_RETURN(Batch data, AssembleTrainingData(*rs, hooks));
  TrainedCandidate out;
  out.trained_classes = TrainedClasses(data);
  const int64_t n = data.size();
  const int64_t bs = std::max(1, l.batch_size);
  const int64_t per_epoch = StepsPerEpoch(n, bs);
  int64_t total = per_epoch * std::max(1, l.epochs);
  if (l.max_steps > 0) total = std::min(total, l.max_steps);

  ASSIGN_OR_RETURN(out.model, CloneForTraining(active_));
  torch::jit::Module& candidate = out.model;
  Status recycle_error;
  const int64_t recycled = RecycleDormant(candidate, data.inputs, &recycle_error);
  RETURN_IF_ERROR(recycle_error);

  std::vector<torch::Tensor> params;
  for (const auto& p : candidate.parameters()) params.push_back(p);
  std::optional<FeatureProjector> projector;
  StepOptions so;
  so.loss.alpha = l.alpha;
  if (!l.feature.method.empty() && l.feature.weight > 0) {
    std::vector<int64_t> shape(data.inputs.sizes().begin() + 1, data.inputs.sizes().end());
    ASSIGN_OR_RETURN(int64_t sw, FeatureWidth(candidate, l.feature.method, shape));
    ASSIGN_OR_RETURN(int64_t tw, FeatureWidth(teacher_, l.feature.method, shape));
    projector.emplace(sw, tw);
    for (const auto& p : (*projector)->parameters()) params.push_back(p);
    so.feature_method = l.feature.method;
    so.feature_weight = l.feature.weight;
    so.teacher = &teacher_;
    so.projector = &*projector;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::Optimizer> opt,
                   MakeOptimizer(l.optimizer, l.learning_rate, std::move(params)));
  const TemperatureScheduleOptions sched = TemperatureScheduleFrom(l);
  hooks.SetTotalSteps(total);
  // See learner.weight_average_decay: started after recycling, so the
  // average begins from the weights the round actually trains.
  std::optional<WeightAverage> average;
  if (l.weight_average_decay > 0) average.emplace(candidate, l.weight_average_decay);
  Status average_error;

  // Replayed rows follow the new ones (AssembleTrainingData); their original
  // images are kept so every epoch draws views of the originals.
  const int64_t replay_first = static_cast<int64_t>(rs->train_new.size());
  torch::Tensor replay_originals;
  if (ReplayAugment(l).enabled() && replay_first < n) {
    replay_originals = data.inputs.narrow(0, replay_first, n - replay_first).clone();
  }
  // Throughput is a measurement, not logic: real time even under a test clock.
  const auto t0 = std::chrono::steady_clock::now();
  int64_t seen = 0;
  double first_loss = 0, last_loss = 0, sum_loss = 0;
  TrainLoopOptions loop;
  loop.steps = total;
  loop.batch_size = bs;
  loop.before_step = [&](int64_t, bool epoch_start) -> Status {
    if (replay_originals.defined() && epoch_start) {
      RETURN_IF_ERROR(RefreshReplayViews(data, replay_first, replay_originals, hooks));
    }
    return BeforeStep(hooks);
  };
  loop.temperature = [&](int64_t step) { return TemperatureAt(sched, step, total); };
  if (l.warmup_steps > 0) {
    const double lr = l.learning_rate, warm = l.warmup_steps;
    loop.learning_rate = [lr, warm](int64_t step) { return lr * std::min(1.0, static_cast<double>(step + 1) / warm); };
  }
  loop.after_step = [&](int64_t step, const StepStats& stats) {
    seen += stats.samples;
    if (step == 0) first_loss = stats.loss;
    last_loss = stats.loss;
    sum_loss += stats.loss;
    if (step > 0) CrashPoint("round.training");
    if (average && average_error.ok()) average_error = average->Update(candidate);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    hooks.ReportStep(step + 1, stats.loss, secs > 0 ? static_cast<double>(seen) / secs : 0.0);
  };
  RETURN_IF_ERROR(RunTrainLoop(candidate, *opt, data, so, rng_, loop));
  RETURN_IF_ERROR(average_error);
  if (l.balanced_finetune_epochs > 0 && o_.replay.replay_ratio > 0) {
    ASSIGN_OR_RETURN(int64_t steps, BalancedFinetune(*rs, candidate, so, TemperatureAt(sched, total, total), total,
                                                     average ? &*average : nullptr, hooks));
    total += steps;
  }
  if (average) RETURN_IF_ERROR(average->CopyTo(candidate));
  rs->record.loss = storage::RoundLoss{total, recycled, first_loss, last_loss,
                                       total > 0 ? sum_loss / static_cast<double>(total) : 0.0};
  candidate.eval();
  return out;
}

// Returns the units recycled; a structural refusal is not an error (logged
// once at start), any other failure goes to *error.
int64_t RoundRunner::RecycleDormant(torch::jit::Module& candidate, const torch::Tensor& inputs, Status* error) {
  if (!o_.learner.recycle_dormant_units) return 0;
  Result<RecycleStats> r = RecycleDormantUnits(candidate, inputs, RecycleOptionsFrom(o_.learner), rng_);
  if (r.ok()) {
    if (r->recycled > 0) {
      LOG(kInfo) << "learner: recycled " << r->recycled << " of " << r->units << " dormant units";
    }
    return r->recycled;
  }
  if (r.status().code() == StatusCode::kFailedPrecondition) {
    // The structural refusal was logged at start; a refused reset (the
    // outputs would change) is logged once here.
    if (!warned_recycle_ && CheckRecyclable(candidate).ok()) {
      LOG(kWarning) << "learner: not recycling dormant units: " << r.status().message();
    }
    warned_recycle_ = true;
    return 0;
  }
  *error = r.status().WithContext("recycling dormant units");
  return 0;
}

// New samples, then replayed ones, as one Batch. Built in chunks with a
// YieldToInference() between them: at 100,000 samples the whole conversion
// takes about two seconds, too long to run in one piece under load.
Result<Batch> RoundRunner::AssembleTrainingData(const RoundState& rs, RoundHooks& hooks) {
  constexpr size_t kChunk = 4096;
  std::vector<torch::Tensor> inputs, labels, logits;
  for (const std::vector<storage::Sample>* part : {&rs.train_new, &rs.replay}) {
    for (size_t i = 0; i < part->size(); i += kChunk) {
      RETURN_IF_ERROR(hooks.YieldToInference());
      RETURN_IF_ERROR(hooks.CheckStop());
      ASSIGN_OR_RETURN(Batch b, SamplesToBatch(std::span<const storage::Sample>(part->data() + i,
                                                                               std::min(kChunk, part->size() - i))));
      inputs.push_back(b.inputs);
      labels.push_back(b.labels);
      if (b.teacher_logits.defined()) logits.push_back(b.teacher_logits);
    }
  }
  if (!logits.empty() && logits.size() != inputs.size()) {
    return Status::InvalidArgument("only some samples carry teacher logits");
  }
  // SamplesToBatch checks within a chunk; torch::cat would throw across them.
  for (size_t i = 1; i < inputs.size(); ++i) {
    if (inputs[i].sizes().slice(1) != inputs[0].sizes().slice(1)) {
      return Status::InvalidArgument("samples of different shapes in one round");
    }
    if (!logits.empty() && logits[i].size(1) != logits[0].size(1)) {
      return Status::InvalidArgument("teacher logit widths differ");
    }
  }
  Batch data;
  data.inputs = inputs.size() == 1 ? inputs[0] : torch::cat(inputs);
  data.labels = labels.size() == 1 ? labels[0] : torch::cat(labels);
  if (!logits.empty()) data.teacher_logits = logits.size() == 1 ? logits[0] : torch::cat(logits);
  return data;
}

// Rows [first, n) of `data` become fresh augmented views of `originals` with
// the teacher's logits on them (learner.replay_shift_px, learner/augment.h).
Status RoundRunner::RefreshReplayViews(Batch& data, int64_t first, const torch::Tensor& originals,
                                       RoundHooks& hooks) {
  ASSIGN_OR_RETURN(torch::Tensor views, AugmentImages(originals, ReplayAugment(o_.learner), rng_));
  const int64_t m = views.size(0);
  const int64_t chunk = std::max<int64_t>(1, o_.teacher_batch_size);
  try {
    data.inputs.narrow(0, first, m).copy_(views);
    for (int64_t i = 0; i < m; i += chunk) {
      RETURN_IF_ERROR(BeforeStep(hooks));
      const int64_t len = std::min(chunk, m - i);
      ASSIGN_OR_RETURN(torch::Tensor logits, ForwardInBatches(teacher_, views.narrow(0, i, len), chunk));
      data.teacher_logits.narrow(0, first + i, len).copy_(logits);
    }
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("replay views: ") + e.what_without_backtrace());
  }
  return Status::Ok();
}

// See learner.balanced_finetune_epochs: a short pass over the whole buffer
// plus as many new samples per class as the buffer holds per class, at a
// lower learning rate. Returns the steps run.
Result<int64_t> RoundRunner::BalancedFinetune(const RoundState& rs, torch::jit::Module& candidate,
                                              const StepOptions& so, double temperature, int64_t main_steps,
                                              WeightAverage* average, RoundHooks& hooks) {
  const config::LearnerConfig& l = o_.learner;
  const replaybuffer::BufferStats stats = o_.buffer->Stats();
  if (stats.size == 0) return int64_t{0};
  ASSIGN_OR_RETURN(std::vector<storage::Sample> set, o_.buffer->Sample(stats.size, rng_));
  std::map<int64_t, std::vector<const storage::Sample*>> fresh;
  for (const auto& s : rs.train_new) {
    if (s.label) fresh[*s.label].push_back(&s);
  }
  uint64_t labelled = 0, classes = 0;
  for (const auto& [cls, count] : stats.class_counts) {
    if (cls < 0 || count == 0) continue;
    labelled += count;
    ++classes;
  }
  const size_t per_class = classes > 0 ? std::max<size_t>(1, labelled / classes) : 1;
  for (auto& [cls, list] : fresh) {
    std::shuffle(list.begin(), list.end(), rng_);
    for (size_t i = 0; i < std::min(per_class, list.size()); ++i) set.push_back(*list[i]);
  }
  std::vector<storage::Sample*> ptrs;
  for (auto& s : set) ptrs.push_back(&s);
  ASSIGN_OR_RETURN(size_t unused, AttachTeacherLogits(ptrs, hooks));
  (void)unused;
  ASSIGN_OR_RETURN(Batch data, SamplesToBatch(set));
  std::vector<torch::Tensor> params;
  for (const auto& p : candidate.parameters()) params.push_back(p);
  ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::Optimizer> opt,
                   MakeOptimizer(l.optimizer, l.learning_rate * l.balanced_finetune_lr_scale, std::move(params)));
  TrainLoopOptions loop;
  loop.batch_size = std::max(1, l.batch_size);
  loop.steps = StepsPerEpoch(data.size(), loop.batch_size) * l.balanced_finetune_epochs;
  hooks.SetTotalSteps(main_steps + loop.steps);
  loop.before_step = [&](int64_t, bool) { return BeforeStep(hooks); };
  Status average_error;
  loop.after_step = [&](int64_t step, const StepStats& st) {
    if (average && average_error.ok()) average_error = average->Update(candidate);
    hooks.ReportStep(main_steps + step + 1, st.loss, -1);
  };
  StepOptions fine = so;
  fine.loss.temperature = temperature;  // where the main pass ended
  RETURN_IF_ERROR(RunTrainLoop(candidate, *opt, data, fine, rng_, loop));
  RETURN_IF_ERROR(average_error);
  return loop.steps;
}

// Classes the round trains on with at least gate.min_class_samples labelled
// rows (new and replayed); they join the candidate's label space. Unlabelled
// rows do not count: the teacher's argmax names classes the student has
// barely seen (a few pullovers it calls coats), and a label space holding
// them brings back the inflated scores the gate avoids (measured on the
// demo: every round after the first rejected).
std::set<int64_t> RoundRunner::TrainedClasses(const Batch& data) const {
  std::set<int64_t> out;
  if (!data.labels.defined() || data.labels.numel() == 0) return out;
  torch::Tensor cls = data.labels.to(torch::kInt64);
  cls = cls.masked_select(cls >= 0);
  if (cls.numel() == 0) return out;
  torch::Tensor counts = torch::bincount(cls);
  auto c = counts.accessor<int64_t, 1>();
  for (int64_t k = 0; k < counts.size(0); ++k) {
    if (c[k] >= o_.learner.min_class_samples) out.insert(k);
  }
  return out;
}

}  // namespace distilld::learner::internal
