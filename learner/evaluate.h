// Evaluation of a model on held-out data: accuracy against labels, agreement
// with the teacher's stored logits, and accuracy per class.
// Free functions; thread-compatible (one caller per module at a time).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>

#include "common/status.h"
#include "storage/sample.h"

namespace distilld::learner {

struct ClassScore {
  int64_t correct = 0;
  int64_t total = 0;
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
};

struct EvalResult {
  int64_t samples = 0;
  int64_t labelled = 0;
  int64_t correct = 0;
  int64_t with_teacher = 0;  // samples that carry teacher logits
  int64_t agree = 0;         // of those, argmax equal to the teacher's
  std::map<int64_t, ClassScore> per_class;  // by true label
  double accuracy() const { return labelled > 0 ? static_cast<double>(correct) / static_cast<double>(labelled) : 0.0; }
  double agreement() const {
    return with_teacher > 0 ? static_cast<double>(agree) / static_cast<double>(with_teacher) : 0.0;
  }
  // {"samples":..,"accuracy":..,"agreement":..,"per_class":{"0":{"acc":..,"n":..}}}
  std::string ToJson() const;
};

// inputs [N, ...]; labels int64 [N] (-1 = unlabelled) or undefined;
// teacher_logits [N, C] or undefined.
Result<EvalResult> EvaluateTensors(torch::jit::Module& model, const torch::Tensor& inputs,
                                   const torch::Tensor& labels, const torch::Tensor& teacher_logits,
                                   int64_t batch_size = 256);

// Same over stored samples (converted in chunks, so a large holdout does not
// need one big tensor). Samples may mix with and without teacher logits.
Result<EvalResult> EvaluateSamples(torch::jit::Module& model, std::span<const storage::Sample> samples,
                                   int64_t batch_size = 256);

}  // namespace distilld::learner
