// See evaluate.h.
#include "learner/evaluate.h"

#include <algorithm>
#include <limits>

#include "learner/train_step.h"

namespace distilld::learner {

namespace {

void Accumulate(const torch::Tensor& pred, const torch::Tensor& labels, const torch::Tensor& teacher_logits,
                EvalResult* r) {
  const int64_t n = pred.size(0);
  auto p = pred.accessor<int64_t, 1>();
  r->samples += n;
  if (labels.defined()) {
    auto l = labels.accessor<int64_t, 1>();
    for (int64_t i = 0; i < n; ++i) {
      if (l[i] < 0) continue;
      ++r->labelled;
      ClassScore& c = r->per_class[l[i]];
      ++c.total;
      if (p[i] == l[i]) {
        ++r->correct;
        ++c.correct;
      }
    }
  }
  if (teacher_logits.defined()) {
    torch::Tensor tp = teacher_logits.argmax(1);
    r->with_teacher += n;
    r->agree += tp.eq(pred).sum().item<int64_t>();
  }
}

}  // namespace

Result<EvalResult> EvaluateTensors(torch::jit::Module& model, const torch::Tensor& inputs,
                                   const torch::Tensor& labels, const torch::Tensor& teacher_logits,
                                   int64_t batch_size) {
  ASSIGN_OR_RETURN(torch::Tensor logits, ForwardInBatches(model, inputs, batch_size));
  EvalResult r;
  if (inputs.size(0) == 0) return r;
  Accumulate(logits.argmax(1), labels.defined() ? labels.to(torch::kInt64) : labels, teacher_logits, &r);
  return r;
}

Result<EvalResult> EvaluateSamples(torch::jit::Module& model, std::span<const storage::Sample> samples,
                                   int64_t batch_size, const std::set<int64_t>& restrict_to,
                                   std::vector<SampleOutcome>* outcomes) {
  EvalResult r;
  if (batch_size <= 0) return Status::InvalidArgument("batch_size must be > 0");
  if (outcomes != nullptr) outcomes->clear();
  torch::Tensor outside;  // bool [C]: true for classes outside restrict_to
  for (size_t i = 0; i < samples.size(); i += static_cast<size_t>(batch_size)) {
    auto chunk = samples.subspan(i, std::min(samples.size() - i, static_cast<size_t>(batch_size)));
    ASSIGN_OR_RETURN(torch::Tensor inputs, SamplesToInputs(chunk));
    ASSIGN_OR_RETURN(torch::Tensor logits, ForwardInBatches(model, inputs, batch_size));
    if (logits.dim() != 2) return Status::InvalidArgument("model output is not [N, classes] logits");
    torch::Tensor pred = logits.argmax(1);
    torch::Tensor labels = torch::full({static_cast<int64_t>(chunk.size())}, -1, torch::kInt64);
    for (size_t j = 0; j < chunk.size(); ++j) {
      if (chunk[j].label) labels[static_cast<int64_t>(j)] = *chunk[j].label;
    }
    Accumulate(pred, labels, torch::Tensor(), &r);
    // Agreement only over samples that carry logits.
    auto p = pred.accessor<int64_t, 1>();
    for (size_t j = 0; j < chunk.size(); ++j) {
      const auto& tl = chunk[j].teacher_logits;
      if (tl.empty()) continue;
      ++r.with_teacher;
      int64_t best = std::max_element(tl.begin(), tl.end()) - tl.begin();
      if (best == p[static_cast<int64_t>(j)]) ++r.agree;
    }
    const size_t first = outcomes != nullptr ? outcomes->size() : 0;
    if (outcomes != nullptr) {
      for (size_t j = 0; j < chunk.size(); ++j) {
        SampleOutcome o;
        if (chunk[j].label) {
          o.label = *chunk[j].label;
          o.correct = p[static_cast<int64_t>(j)] == o.label;
        }
        outcomes->push_back(o);
      }
    }
    if (restrict_to.empty()) continue;
    const int64_t width = logits.size(1);
    if (!outside.defined()) {
      outside = torch::ones({width}, torch::kBool);
      for (int64_t cls : restrict_to) {
        if (cls >= 0 && cls < width) {
          outside[cls] = false;
          r.restricted_to.insert(cls);
        }
      }
    }
    if (r.restricted_to.empty()) continue;
    torch::Tensor masked = logits.masked_fill(outside.unsqueeze(0), -std::numeric_limits<float>::infinity());
    torch::Tensor rpred = masked.argmax(1);
    auto rp = rpred.accessor<int64_t, 1>();
    for (size_t j = 0; j < chunk.size(); ++j) {
      if (!chunk[j].label || r.restricted_to.count(*chunk[j].label) == 0) continue;
      if (rp[static_cast<int64_t>(j)] == *chunk[j].label) {
        ++r.per_class[*chunk[j].label].correct_restricted;
        if (outcomes != nullptr) (*outcomes)[first + j].correct_restricted = true;
      }
    }
  }
  return r;
}

}  // namespace distilld::learner
