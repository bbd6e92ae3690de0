// See eval_result.h.
#include "learner/eval_result.h"

#include <algorithm>
#include <sstream>

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

std::string EvalResult::ToJson() const {
  std::ostringstream os;
  os.precision(6);
  os << "{\"samples\":" << samples << ",\"labelled\":" << labelled << ",\"accuracy\":" << accuracy()
     << ",\"balanced_accuracy\":" << balanced_accuracy() << ",\"with_teacher\":" << with_teacher
     << ",\"agreement\":" << agreement() << ",\"per_class\":{";
  bool first = true;
  for (const auto& [cls, score] : per_class) {
    if (!first) os << ",";
    first = false;
    os << "\"" << cls << "\":{\"acc\":" << score.accuracy() << ",\"n\":" << score.total << "}";
  }
  os << "}";
  if (!restricted_to.empty()) {
    os << ",\"old_space\":{\"classes\":[";
    first = true;
    for (int64_t cls : restricted_to) {
      if (!first) os << ",";
      first = false;
      os << cls;
    }
    os << "],\"accuracy\":" << restricted_accuracy() << ",\"per_class\":{";
    first = true;
    for (int64_t cls : restricted_to) {
      auto it = per_class.find(cls);
      if (it == per_class.end()) continue;
      if (!first) os << ",";
      first = false;
      os << "\"" << cls << "\":{\"acc\":" << it->second.restricted_accuracy() << ",\"n\":" << it->second.total
         << "}";
    }
    os << "}}";
  }
  os << "}";
  return os.str();
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
