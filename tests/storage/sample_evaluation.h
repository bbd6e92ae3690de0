// A round evaluation with every field set (optional ones too, a string that
// needs escaping, doubles that need all their digits), for round-trip tests.
#pragma once

#include "storage/evaluation.h"

namespace distilld::testing {

inline storage::RoundEvaluation SampleEvaluation() {
  storage::RoundEvaluation e;
  e.basis = "holdout";
  e.candidate.samples = 300;
  e.candidate.labelled = 290;
  e.candidate.accuracy = 0.1 + 0.2;  // not exactly 0.3
  e.candidate.balanced_accuracy = 2.0 / 3.0;
  e.candidate.with_teacher = 280;
  e.candidate.agreement = 0.95;
  e.candidate.per_class = {{0, {0.99, 100}}, {1, {0.5, 90}}, {12, {0.0, 100}}};
  e.candidate.old_space = storage::RestrictedScore{{0, 1}, 0.875, {{0, {1.0, 100}}, {1, {0.75, 90}}}};
  e.active.samples = 300;
  e.active.labelled = 290;
  e.active.accuracy = 0.25;
  e.active.per_class = {{0, {0.5, 100}}};
  e.active_version = 7;
  e.label_space = {0, 1, 12};
  e.active_label_space = {0, 1};
  e.active_label_space_source = storage::LabelSpaceSource::kInferred;
  e.holdout_size = 300;
  e.holdout_generation = 18'000'000'000'000'000'000ull;  // above int64's range
  e.gate.promote = false;
  e.gate.basis = "holdout";
  e.gate.reason = "class 1 accuracy 0.5 vs active \"0.9\"\n";
  e.gate.checks.push_back({"accuracy", std::nullopt, 0.05, 0.005, true, false, "ok"});
  e.gate.checks.push_back({"old_class_accuracy", 1, 0.4, 0.1, false, true, "class 1: 0.5 vs active 0.9"});
  return e;
}

}  // namespace distilld::testing
