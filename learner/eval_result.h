// What an evaluation of one model on a set of samples found: accuracy against
// labels, overall, per class and (optionally) with predictions restricted to
// a subset of the classes, plus agreement with the teacher's stored logits.
// A plain value type (thread-compatible) with no LibTorch dependency, so the
// gate (learner/gate.h) can be a pure function of two of them.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "storage/evaluation.h"

namespace distilld::learner {

struct ClassScore {
  int64_t correct = 0;
  int64_t total = 0;
  // Correct when the prediction is restricted to EvalResult::restricted_to
  // (the argmax over those classes' logits only). Counted only for classes in
  // that set; 0 otherwise.
  int64_t correct_restricted = 0;
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
  double restricted_accuracy() const {
    return total > 0 ? static_cast<double>(correct_restricted) / static_cast<double>(total) : 0.0;
  }
};

struct EvalResult {
  int64_t samples = 0;
  int64_t labelled = 0;
  int64_t correct = 0;
  int64_t with_teacher = 0;  // samples that carry teacher logits
  int64_t agree = 0;         // of those, argmax equal to the teacher's
  std::map<int64_t, ClassScore> per_class;  // by true label
  // Classes the restricted scores were computed over (empty = none were).
  std::set<int64_t> restricted_to;

  double accuracy() const { return labelled > 0 ? static_cast<double>(correct) / static_cast<double>(labelled) : 0.0; }
  double agreement() const {
    return with_teacher > 0 ? static_cast<double>(agree) / static_cast<double>(with_teacher) : 0.0;
  }
  // Mean of the per-class accuracies over the classes present (0 if none).
  double balanced_accuracy() const;
  // Over the samples whose true class is in restricted_to: the share
  // predicted correctly among those classes only (0 if there are none).
  double restricted_accuracy() const;
  // The summary a round records: the accuracies, and old_space when
  // restricted scores were computed.
  storage::ModelScore ToScore() const;
};

// Paired comparison of two models on the same samples: how many only one of
// them gets right. Drops in accuracy are judged against these (McNemar's
// test): on a small held-out set one sample is a percent.
struct Disagreement {
  int64_t active_only = 0;     // right by the active version, wrong by the candidate
  int64_t candidate_only = 0;  // the other way round
};

struct PairedEval {
  bool present = false;  // false: judge by the size of a drop alone
  Disagreement overall;
  std::map<int64_t, Disagreement> per_class;             // by true label, full label space
  std::map<int64_t, Disagreement> per_class_restricted;  // predictions restricted to the old classes
};

// One labelled sample's outcome, for building a PairedEval.
struct SampleOutcome {
  int64_t label = -1;
  bool correct = false;
  bool correct_restricted = false;  // meaningful for labels in restricted_to
};

// Zips two evaluations of the same samples (same order, same length).
// `overall` judges samples of `old_classes` by their restricted predictions
// (as the gate's accuracy check does), the others in the full label space.
PairedEval Pair(const std::vector<SampleOutcome>& candidate, const std::vector<SampleOutcome>& active,
                const std::set<int64_t>& old_classes = {});

}  // namespace distilld::learner
