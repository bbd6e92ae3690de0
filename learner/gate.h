// The evaluation gate: whether a candidate version may replace the active
// one, decided from their evaluations on the same held-out set.
//
// Why it judges old knowledge in the active version's own label space: a
// version that was trained on classes {0, 1} only never confuses class 0 with
// class 2, because it never predicts 2. Its class-0 accuracy is inflated by
// that ignorance, and a candidate that has learned four classes is, rightly,
// less certain about class 0. Comparing full-label-space per-class accuracy
// reads that as forgetting and rejects every good class-incremental candidate.
// So the checks are:
//   accuracy          overall held-out accuracy (all classes present, the
//                     old ones judged among the active's classes, for the
//                     same reason) may drop by at most max_accuracy_drop,
//                     unless balanced accuracy (the mean over classes) rises
//                     by more than that: a class that just started to arrive
//                     has few held-out samples, and learning it costs a
//                     little on the well-represented old classes;
//   old_class_accuracy  for each class the active version knew, accuracy with
//                     both models' predictions restricted to the active's
//                     label space may drop by at most max_class_drop (real
//                     forgetting: the candidate no longer tells old classes
//                     apart);
//   old_class_retention for each old class the active version recognises
//                     (accuracy >= min_new_class_accuracy), the candidate's
//                     full-space accuracy must keep at least
//                     min_class_retention of the active's (catches a
//                     candidate that stopped predicting an old class at all,
//                     which the restricted score alone can miss);
//   new_classes_learned held-out classes outside the active's label space may
//                     not all stay below min_new_class_accuracy for the
//                     candidate while the active is below it too;
//   teacher_agreement with no labelled held-out samples, agreement with the
//                     teacher on the round's new samples may drop by at most
//                     max_accuracy_drop.
// Per-class checks skip classes with fewer than min_class_samples held-out
// samples (reported, not judged: one sample of five is 20 points). A drop
// beyond its threshold fails a check only if it is also beyond noise:
// McNemar's test on the samples only one of the two models gets right
// (drop significant when active_only - candidate_only > regression_z *
// sqrt(active_only + candidate_only)), so on a 200-sample held-out set one
// unlucky sample does not reject a candidate, while a real regression, which
// moves dozens, still does.
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "learner/eval_result.h"
#include "storage/evaluation.h"

namespace distilld::learner {

struct GateOptions {
  // Largest allowed drop of overall held-out accuracy (and of teacher
  // agreement when there is no labelled held-out data). Default 0.005.
  double max_accuracy_drop = 0.005;
  // Largest allowed per-class drop in the active version's label space.
  // Default 0.1: retraining with replay moves confusable old classes against
  // each other by several points (Fashion-MNIST shirts vs T-shirts) without
  // forgetting either; forgetting without replay drops them by 30-100.
  double max_class_drop = 0.1;
  // Share of an old class's full-space accuracy the candidate must keep.
  // Default 0.5: new confusable classes legitimately take some accuracy from
  // old ones (0.99 -> 0.76 for T-shirts once shirts arrive).
  double min_class_retention = 0.5;
  // Held-out accuracy at which a class counts as learned (new classes) or
  // recognised (old classes, for retention). Default 0.2: twice chance with
  // ten classes.
  double min_new_class_accuracy = 0.2;
  // Classes with fewer held-out samples are reported but not judged.
  int64_t min_class_samples = 20;
  // How many standard errors a drop must exceed chance by to count (see
  // above). Default 1.645: one-sided 95%. 0: judge drops by size alone.
  double regression_z = 1.645;
};

// A check and the decision are stored with the round as they are
// (storage/evaluation.h): the gate's result is the record.
using GateCheck = storage::GateCheckResult;
using GateDecision = storage::GateVerdict;

struct GateInput {
  // Both evaluated on the same samples. For basis "holdout" both carry
  // restricted scores over `old_classes` (EvaluateSamples' restrict_to).
  EvalResult candidate;
  EvalResult active;
  // The active version's label space: classes it was trained on.
  std::set<int64_t> old_classes;
  // true: no labelled held-out data; the evaluations are on the round's new
  // samples and only teacher agreement is judged.
  bool teacher_basis = false;
  // Per-sample agreement of the two (Pair in eval_result.h); without it
  // drops are judged by their size alone.
  PairedEval paired;
};

GateDecision DecidePromotion(const GateInput& input, const GateOptions& options);

// The classes a version without a recorded label space evidently knows: those
// with at least min_class_samples held-out samples that it classifies with at
// least min_new_class_accuracy accuracy. For an initial student supplied by
// the user, whose training history distilld does not know.
std::set<int64_t> InferLabelSpace(const EvalResult& eval, const GateOptions& options);

// Checks that options are in range; "" if fine, else which field is not.
std::string ValidateGateOptions(const GateOptions& options);

}  // namespace distilld::learner
