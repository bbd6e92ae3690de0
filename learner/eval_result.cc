// See eval_result.h.
#include "learner/eval_result.h"

#include <algorithm>

namespace distilld::learner {

double EvalResult::balanced_accuracy() const {
  double sum = 0;
  int64_t classes = 0;
  for (const auto& [cls, score] : per_class) {
    if (score.total == 0) continue;
    sum += score.accuracy();
    ++classes;
  }
  return classes > 0 ? sum / static_cast<double>(classes) : 0.0;
}

double EvalResult::restricted_accuracy() const {
  int64_t n = 0, correct = 0;
  for (int64_t cls : restricted_to) {
    auto it = per_class.find(cls);
    if (it == per_class.end()) continue;
    n += it->second.total;
    correct += it->second.correct_restricted;
  }
  return n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
}

storage::ModelScore EvalResult::ToScore() const {
  storage::ModelScore s;
  s.samples = samples;
  s.labelled = labelled;
  s.accuracy = accuracy();
  s.balanced_accuracy = balanced_accuracy();
  s.with_teacher = with_teacher;
  s.agreement = agreement();
  for (const auto& [cls, score] : per_class) s.per_class[cls] = {score.accuracy(), score.total};
  if (!restricted_to.empty()) {
    storage::RestrictedScore r;
    r.classes = restricted_to;
    r.accuracy = restricted_accuracy();
    for (int64_t cls : restricted_to) {
      auto it = per_class.find(cls);
      if (it != per_class.end()) r.per_class[cls] = {it->second.restricted_accuracy(), it->second.total};
    }
    s.old_space = std::move(r);
  }
  return s;
}

PairedEval Pair(const std::vector<SampleOutcome>& candidate, const std::vector<SampleOutcome>& active,
                const std::set<int64_t>& old_classes) {
  PairedEval p;
  p.present = true;
  const size_t n = std::min(candidate.size(), active.size());
  for (size_t i = 0; i < n; ++i) {
    const SampleOutcome& c = candidate[i];
    const SampleOutcome& a = active[i];
    if (c.label < 0 || c.label != a.label) continue;
    auto tally = [](bool cand, bool act, Disagreement* d) {
      if (act && !cand) ++d->active_only;
      if (cand && !act) ++d->candidate_only;
    };
    if (old_classes.count(c.label)) {
      tally(c.correct_restricted, a.correct_restricted, &p.overall);
    } else {
      tally(c.correct, a.correct, &p.overall);
    }
    tally(c.correct, a.correct, &p.per_class[c.label]);
    tally(c.correct_restricted, a.correct_restricted, &p.per_class_restricted[c.label]);
  }
  return p;
}

}  // namespace distilld::learner
