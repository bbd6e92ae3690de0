// Evaluation of a model on held-out data: accuracy against labels, agreement
// with the teacher's stored logits, accuracy per class, and optionally the
// same with predictions restricted to a subset of the classes (the gate
// judges old knowledge in the active version's own label space).
// Free functions; thread-compatible (one caller per module at a time).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "learner/eval_result.h"
#include "storage/sample.h"

namespace distilld::learner {

// inputs [N, ...]; labels int64 [N] (-1 = unlabelled) or undefined;
// teacher_logits [N, C] or undefined.
Result<EvalResult> EvaluateTensors(torch::jit::Module& model, const torch::Tensor& inputs,
                                   const torch::Tensor& labels, const torch::Tensor& teacher_logits,
                                   int64_t batch_size = 256);

// Same over stored samples (converted in chunks, so a large holdout does not
// need one big tensor). Samples may mix with and without teacher logits.
// `restrict_to`: classes over which ClassScore::correct_restricted is also
// counted (argmax over those logits only); empty = not computed. Classes
// outside [0, logits width) are ignored. `outcomes` (optional) gets one entry
// per sample, in order (label -1 for unlabelled ones), for a paired
// comparison with another model (Pair in eval_result.h).
Result<EvalResult> EvaluateSamples(torch::jit::Module& model, std::span<const storage::Sample> samples,
                                   int64_t batch_size = 256, const std::set<int64_t>& restrict_to = {},
                                   std::vector<SampleOutcome>* outcomes = nullptr);

}  // namespace distilld::learner
