// What a learner round measured, as typed values: how the candidate and the
// active version scored on the held-out set, what the gate checked, the loss
// curve's summary, and the label space each version knows. The learner
// produces these, the registry keeps them, the daemon reads them for its
// gauges and the /v1 API writes them out; JSON exists only at those edges
// (storage/evaluation_json.h).
//
// Plain value types (thread-compatible), no LibTorch.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace distilld::storage {

struct ClassAccuracy {
  double accuracy = 0;
  int64_t samples = 0;  // held-out samples of the class
  bool operator==(const ClassAccuracy&) const = default;
};

// One model's scores with its predictions restricted to a set of classes
// (the active version's label space): old knowledge, judged without the
// penalty of classes the active never predicts.
struct RestrictedScore {
  std::set<int64_t> classes;
  double accuracy = 0;
  std::map<int64_t, ClassAccuracy> per_class;
  bool operator==(const RestrictedScore&) const = default;
};

// One model evaluated on a set of samples.
struct ModelScore {
  int64_t samples = 0;
  int64_t labelled = 0;
  double accuracy = 0;           // over labelled samples; 0 when none
  double balanced_accuracy = 0;  // mean over the classes present
  int64_t with_teacher = 0;      // samples carrying teacher logits
  double agreement = 0;          // argmax equal to the teacher's, of those
  std::map<int64_t, ClassAccuracy> per_class;  // by true label
  std::optional<RestrictedScore> old_space;
  bool operator==(const ModelScore&) const = default;
};

// One check of the promotion gate (learner/gate.h names them).
struct GateCheckResult {
  std::string name;            // accuracy, old_class_accuracy, ...
  std::optional<int64_t> cls;  // for per-class checks
  double value = 0;            // what was measured (a drop, a ratio, an accuracy)
  double threshold = 0;        // what it was held against
  bool pass = true;
  std::optional<bool> significant;  // beyond noise (paired test), when known
  std::string detail;               // one line, e.g. "class 0: 0.76 vs active 0.99"
  bool operator==(const GateCheckResult&) const = default;
};

struct GateVerdict {
  bool promote = false;
  std::string basis;   // "holdout" or "teacher_agreement"
  std::string reason;  // empty when promoted; else the failed checks' details
  std::vector<GateCheckResult> checks;
  bool operator==(const GateVerdict&) const = default;
};

// Where the active version's label space came from: its own record, or
// (for a student distilld did not train) what it evidently classifies.
enum class LabelSpaceSource { kRecorded, kInferred };

// A round's evaluation of its candidate against the active version, on one
// held-out set.
struct RoundEvaluation {
  std::string basis;  // as GateVerdict::basis
  ModelScore candidate;
  ModelScore active;
  int64_t active_version = 0;
  std::set<int64_t> label_space;         // the candidate's
  std::set<int64_t> active_label_space;  // what old knowledge was judged over
  LabelSpaceSource active_label_space_source = LabelSpaceSource::kRecorded;
  int64_t holdout_size = 0;
  uint64_t holdout_generation = 0;  // changes when the held-out set does
  GateVerdict gate;
  bool operator==(const RoundEvaluation&) const = default;
};

// What the registry keeps with a version. Both parts are optional: a version
// imported from a file has neither, the initial version of a fresh state
// directory only an (empty) label space.
struct VersionMetrics {
  // The classes the version's lineage was trained on.
  std::optional<std::set<int64_t>> label_space;
  // The evaluation of the round that produced it.
  std::optional<RoundEvaluation> evaluation;
  bool operator==(const VersionMetrics&) const = default;
};

// Summary of a round's training loss curve.
struct RoundLoss {
  int64_t steps = 0;
  int64_t recycled_units = 0;  // dormant units re-initialised before training
  double first = 0;
  double last = 0;
  double mean = 0;
  bool operator==(const RoundLoss&) const = default;
};

}  // namespace distilld::storage
