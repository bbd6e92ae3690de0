// See evaluate.h.
#include "learner/evaluate.h"

#include <sstream>

#include "learner/train_step.h"

namespace distilld::learner {

std::string EvalResult::ToJson() const {
  std::ostringstream os;
  os.precision(6);
  os << "{\"samples\":" << samples << ",\"labelled\":" << labelled << ",\"accuracy\":" << accuracy()
     << ",\"with_teacher\":" << with_teacher << ",\"agreement\":" << agreement() << ",\"per_class\":{";
  bool first = true;
  for (const auto& [cls, score] : per_class) {
    if (!first) os << ",";
    first = false;
    os << "\"" << cls << "\":{\"acc\":" << score.accuracy() << ",\"n\":" << score.total << "}";
  }
  os << "}}";
  return os.str();
}

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
                                   int64_t batch_size) {
  EvalResult r;
  if (batch_size <= 0) return Status::InvalidArgument("batch_size must be > 0");
  for (size_t i = 0; i < samples.size(); i += static_cast<size_t>(batch_size)) {
    auto chunk = samples.subspan(i, std::min(samples.size() - i, static_cast<size_t>(batch_size)));
    ASSIGN_OR_RETURN(torch::Tensor inputs, SamplesToInputs(chunk));
    ASSIGN_OR_RETURN(torch::Tensor logits, ForwardInBatches(model, inputs, batch_size));
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
  }
  return r;
}

}  // namespace distilld::learner
