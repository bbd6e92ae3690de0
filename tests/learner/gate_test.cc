// The promotion gate as a pure function. The evaluations below are shaped
// after Fashion-MNIST class-incremental runs (docs/benchmarks.md, the
// acceptance run): an active version that knows classes 0 and 1, a held-out
// set of four classes, 100 samples each.
#include <doctest/doctest.h>

#include <cmath>
#include <initializer_list>
#include <string>

#include "learner/gate.h"

namespace distilld::learner {
namespace {

struct Row {
  int64_t cls;
  double full;        // accuracy in the full label space
  double restricted;  // accuracy among the restricted classes (ignored outside them)
  int64_t n = 100;
};

EvalResult Eval(std::initializer_list<Row> rows, std::set<int64_t> restricted_to) {
  EvalResult e;
  e.restricted_to = restricted_to;
  for (const Row& r : rows) {
    ClassScore s;
    s.total = r.n;
    s.correct = std::llround(r.full * static_cast<double>(r.n));
    if (restricted_to.count(r.cls)) s.correct_restricted = std::llround(r.restricted * static_cast<double>(r.n));
    e.per_class[r.cls] = s;
    e.samples += r.n;
    e.labelled += r.n;
    e.correct += s.correct;
  }
  return e;
}

const GateCheck* FindCheck(const GateDecision& d, const std::string& name, std::optional<int64_t> cls = {}) {
  for (const auto& c : d.checks) {
    if (c.name == name && (!cls || c.cls == cls)) return &c;
  }
  return nullptr;
}

// The active version after the first phase: classes 0 and 1 right, 2 and 3
// never predicted.
EvalResult ActiveKnowingTwo() {
  return Eval({{0, 0.99, 0.99}, {1, 0.98, 0.98}, {2, 0.0, 0.0}, {3, 0.0, 0.0}}, {0, 1});
}

TEST_CASE("a candidate that learned new classes with replay is promoted, though old classes lose full-space accuracy") {
  GateInput in;
  in.old_classes = {0, 1};
  in.active = ActiveKnowingTwo();
  // Class 0 at 0.76 in the full space (T-shirts now compete with pullovers
  // and dresses) but still told apart from trousers among classes {0, 1}.
  in.candidate = Eval({{0, 0.76, 0.97}, {1, 0.94, 0.98}, {2, 0.85, 0}, {3, 0.90, 0}}, {0, 1});
  GateDecision d = DecidePromotion(in, GateOptions{});
  CHECK(d.promote);
  CHECK(d.reason.empty());
  CHECK(d.basis == "holdout");
  // The full-space drop of class 0 (0.23) is what the old per-class rule
  // rejected; in the active's label space it is 0.02.
  const GateCheck* old0 = FindCheck(d, "old_class_accuracy", 0);
  REQUIRE(old0 != nullptr);
  CHECK(old0->value == doctest::Approx(0.02));
  CHECK(old0->threshold == doctest::Approx(GateOptions{}.max_class_drop));
  CHECK(old0->pass);
  const GateCheck* keep0 = FindCheck(d, "old_class_retention", 0);
  REQUIRE(keep0 != nullptr);
  CHECK(keep0->value == doctest::Approx(0.76 / 0.99));
  CHECK(keep0->pass);
  const GateCheck* learned = FindCheck(d, "new_classes_learned");
  REQUIRE(learned != nullptr);
  CHECK(learned->value == doctest::Approx(0.90));
  CHECK(learned->pass);
  const GateCheck* acc = FindCheck(d, "accuracy");
  REQUIRE(acc != nullptr);
  CHECK(acc->value < 0);  // it rose
  CHECK(acc->pass);
  // Every check names its value, threshold and verdict; the decision is
  // what the round records (storage::GateVerdict).
  CHECK(d.promote);
  CHECK(d.reason.empty());
  for (const GateCheck& c : d.checks) {
    CAPTURE(c.name);
    CHECK(c.pass);
    CHECK_FALSE(c.detail.empty());
  }
}

TEST_CASE("a candidate trained on new classes without replay is rejected for forgetting the old ones") {
  GateInput in;
  in.old_classes = {0, 1};
  in.active = ActiveKnowingTwo();
  // Measured shape without replay: 0 and 1 are never predicted any more,
  // although between the two of them the output layer still ranks them right.
  in.candidate = Eval({{0, 0.0, 0.98}, {1, 0.0, 0.97}, {2, 0.99, 0}, {3, 0.98, 0}}, {0, 1});
  GateDecision d = DecidePromotion(in, GateOptions{});
  CHECK_FALSE(d.promote);
  const GateCheck* keep0 = FindCheck(d, "old_class_retention", 0);
  REQUIRE(keep0 != nullptr);
  CHECK_FALSE(keep0->pass);
  CHECK(keep0->value == doctest::Approx(0.0));
  CHECK(d.reason.find("class 0 accuracy 0 vs active 0.99") != std::string::npos);
  // The restricted score alone would not have caught it.
  CHECK(FindCheck(d, "old_class_accuracy", 0)->pass);
  // Nor would overall accuracy, which judges old classes among the old
  // ones too: there the candidate still tells T-shirts from trousers.
  CHECK(FindCheck(d, "accuracy")->pass);
}

TEST_CASE("forgetting how to tell old classes apart is rejected in the active version's label space") {
  GateInput in;
  in.old_classes = {0, 1, 2, 3};
  in.active = Eval({{0, 0.89, 0.89}, {1, 0.94, 0.94}, {2, 0.95, 0.95}, {3, 0.92, 0.92}, {4, 0, 0}, {5, 0, 0}},
                   {0, 1, 2, 3});
  // Trousers now read as dresses even among the old classes.
  in.candidate = Eval({{0, 0.85, 0.88}, {1, 0.50, 0.52}, {2, 0.90, 0.95}, {3, 0.88, 0.93}, {4, 0.9, 0}, {5, 0.97, 0}},
                      {0, 1, 2, 3});
  GateDecision d = DecidePromotion(in, GateOptions{});
  CHECK_FALSE(d.promote);
  const GateCheck* old1 = FindCheck(d, "old_class_accuracy", 1);
  REQUIRE(old1 != nullptr);
  CHECK_FALSE(old1->pass);
  CHECK(old1->value == doctest::Approx(0.42));
  CHECK(d.reason.find("class 1 accuracy among the active version's classes 0.52 vs active 0.94") !=
        std::string::npos);
  // The other old classes pass; the one failure is the whole reason.
  CHECK(FindCheck(d, "old_class_accuracy", 0)->pass);
  CHECK(d.reason.find("class 0") == std::string::npos);
}

TEST_CASE("a candidate worse overall on the same classes is rejected") {
  GateInput in;
  in.old_classes = {0, 1, 2, 3};
  in.active = Eval({{0, 0.90, 0.90}, {1, 0.95, 0.95}, {2, 0.85, 0.85}, {3, 0.90, 0.90}}, {0, 1, 2, 3});
  in.candidate = Eval({{0, 0.88, 0.88}, {1, 0.94, 0.94}, {2, 0.83, 0.83}, {3, 0.88, 0.88}}, {0, 1, 2, 3});
  GateDecision d = DecidePromotion(in, GateOptions{});
  CHECK_FALSE(d.promote);
  const GateCheck* acc = FindCheck(d, "accuracy");
  REQUIRE(acc != nullptr);
  CHECK_FALSE(acc->pass);
  CHECK(acc->value == doctest::Approx(0.0175));
  CHECK(d.reason.find("held-out accuracy 0.8825 vs active 0.9, drops more than 0.005") != std::string::npos);
  // Small per-class moves are within max_class_drop.
  for (int64_t c = 0; c < 4; ++c) CHECK(FindCheck(d, "old_class_accuracy", c)->pass);
  // No new classes: no such check.
  CHECK(FindCheck(d, "new_classes_learned") == nullptr);
}

TEST_CASE("a distillation round on the classes the student already knows is judged among those classes") {
  // Measured on Fashion-MNIST (bench/acceptance): a user's student trained on
  // T-shirts and trousers only, a KD round on more of them. The teacher taught
  // the candidate that shirts exist, so in the full label space it calls a
  // few T-shirts shirts, which the active version, knowing no shirts, never
  // does.
  GateInput in;
  in.old_classes = {0, 1};
  in.active = Eval({{0, 0.99, 0.99, 600}, {1, 0.99, 0.99, 600}}, {0, 1});
  in.candidate = Eval({{0, 0.97, 0.99, 600}, {1, 0.985, 0.99, 600}}, {0, 1});
  in.paired.present = true;
  in.paired.overall = {3, 3};  // among {0, 1}: as many fixed as broken
  in.paired.per_class[0] = {14, 2};
  in.paired.per_class_restricted[0] = {2, 2};
  GateDecision d = DecidePromotion(in, GateOptions{});
  INFO(d.reason);
  CHECK(d.promote);
  const GateCheck* acc = FindCheck(d, "accuracy");
  REQUIRE(acc != nullptr);
  CHECK(acc->value == doctest::Approx(0.0));
  CHECK(acc->detail.find("full label space 0.9775 vs 0.99") != std::string::npos);
}

TEST_CASE("learning classes with few held-out samples may cost a little overall accuracy: balanced accuracy decides") {
  // Mid-phase: eight old classes with 100 held-out samples each, the two
  // new ones with 10 so far (measured shape of a count-triggered round).
  GateInput in;
  in.old_classes = {0, 1, 2, 3, 4, 5, 6, 7};
  // Old classes lose a little even among themselves (restricted = full).
  in.active = Eval({{0, 0.88, 0.88}, {1, 0.95, 0.95}, {2, 0.80, 0.80}, {3, 0.86, 0.86}, {4, 0.80, 0.80},
                    {5, 0.95, 0.95}, {6, 0.60, 0.60}, {7, 0.92, 0.92}, {8, 0.0, 0.0, 10}, {9, 0.0, 0.0, 10}},
                   {0, 1, 2, 3, 4, 5, 6, 7});
  in.candidate = Eval({{0, 0.86, 0.86}, {1, 0.94, 0.94}, {2, 0.78, 0.78}, {3, 0.85, 0.85}, {4, 0.78, 0.78},
                       {5, 0.92, 0.92}, {6, 0.57, 0.57}, {7, 0.88, 0.88}, {8, 0.5, 0.0, 10}, {9, 0.5, 0.0, 10}},
                      {0, 1, 2, 3, 4, 5, 6, 7});
  GateOptions o;
  o.min_class_samples = 10;
  GateDecision d = DecidePromotion(in, o);
  INFO(d.reason);
  CHECK(d.promote);
  const GateCheck* acc = FindCheck(d, "accuracy");
  REQUIRE(acc != nullptr);
  CHECK(acc->value > o.max_accuracy_drop);  // overall did drop
  CHECK(acc->pass);
  CHECK(acc->detail.find("allowed: balanced accuracy rises by") != std::string::npos);
  // Without the new classes' gain the same old-class losses are a regression.
  in.candidate.per_class[8] = in.active.per_class[8];
  in.candidate.per_class[9] = in.active.per_class[9];
  CHECK_FALSE(DecidePromotion(in, o).promote);
}

TEST_CASE("a candidate identical to the active one: promoted when nothing new arrived, rejected when new classes stay unlearned") {
  GateInput same;
  same.old_classes = {0, 1, 2, 3};
  same.active = Eval({{0, 0.9, 0.9}, {1, 0.95, 0.95}, {2, 0.85, 0.85}, {3, 0.9, 0.9}}, {0, 1, 2, 3});
  same.candidate = same.active;
  GateDecision d = DecidePromotion(same, GateOptions{});
  CHECK(d.promote);  // no regression, and it carries the round's samples in its lineage
  for (const auto& c : d.checks) {
    if (c.name == "accuracy" || c.name == "old_class_accuracy") CHECK(c.value == doctest::Approx(0.0));
    if (c.name == "old_class_retention") CHECK(c.value == doctest::Approx(1.0));
  }

  GateInput stale;
  stale.old_classes = {0, 1};
  stale.active = ActiveKnowingTwo();
  stale.candidate = stale.active;
  GateDecision r = DecidePromotion(stale, GateOptions{});
  CHECK_FALSE(r.promote);
  const GateCheck* learned = FindCheck(r, "new_classes_learned");
  REQUIRE(learned != nullptr);
  CHECK_FALSE(learned->pass);
  CHECK(r.reason == "new classes {2,3}: best is class 2 at 0, below 0.2 (nothing new learned)");
}

TEST_CASE("classes with too few held-out samples are reported in the evaluation but not judged") {
  GateInput in;
  in.old_classes = {0, 1};
  in.active = Eval({{0, 1.0, 1.0, 5}, {1, 0.98, 0.98}, {2, 0.0, 0.0}}, {0, 1});
  in.candidate = Eval({{0, 0.2, 0.4, 5}, {1, 0.97, 0.98}, {2, 0.9, 0}}, {0, 1});
  GateOptions o;
  o.max_accuracy_drop = 1.0;  // isolate the per-class checks
  GateDecision d = DecidePromotion(in, o);
  CHECK(d.promote);
  CHECK(FindCheck(d, "old_class_accuracy", 0) == nullptr);
  CHECK(FindCheck(d, "old_class_retention", 0) == nullptr);
  CHECK(FindCheck(d, "old_class_accuracy", 1) != nullptr);
  o.min_class_samples = 5;
  GateDecision strict = DecidePromotion(in, o);
  CHECK_FALSE(strict.promote);
  CHECK_FALSE(FindCheck(strict, "old_class_accuracy", 0)->pass);
}

TEST_CASE("a drop beyond its threshold fails only when it is beyond noise (paired samples)") {
  GateInput small;
  small.old_classes = {0, 1};
  // 200 held-out samples: the candidate gets two more wrong than the active.
  small.active = Eval({{0, 0.98, 0.98}, {1, 0.98, 0.98}}, {0, 1});
  small.candidate = Eval({{0, 0.96, 0.96}, {1, 0.98, 0.98}}, {0, 1});
  small.paired.present = true;
  small.paired.overall = {3, 1};  // 3 right only by the active, 1 only by the candidate
  GateDecision d = DecidePromotion(small, GateOptions{});
  CHECK(d.promote);
  const GateCheck* acc = FindCheck(d, "accuracy");
  REQUIRE(acc != nullptr);
  CHECK(acc->value == doctest::Approx(0.01));
  CHECK(acc->significant == false);
  CHECK(acc->pass);
  CHECK(acc->detail.find("(within noise: 3 samples right only by the active version, 1 only by the candidate)") !=
        std::string::npos);

  // The same accuracies over 10,000 samples: 150 against 50 is a regression.
  GateInput large = small;
  for (auto* e : {&large.active, &large.candidate}) {
    for (auto& [cls, score] : e->per_class) {
      score.total *= 50;
      score.correct *= 50;
      score.correct_restricted *= 50;
    }
    e->labelled *= 50;
    e->correct *= 50;
  }
  large.paired.overall = {150, 50};
  GateDecision r = DecidePromotion(large, GateOptions{});
  CHECK_FALSE(r.promote);
  CHECK(FindCheck(r, "accuracy")->significant == true);
  CHECK(r.reason.find("(beyond noise: 150 samples right only by the active version, 50 only by the candidate)") !=
        std::string::npos);
  // regression_z 0: any net loss beyond the threshold counts.
  GateOptions strict;
  strict.regression_z = 0;
  CHECK_FALSE(DecidePromotion(small, strict).promote);
}

TEST_CASE("per-class drops are judged against noise too") {
  GateInput in;
  in.old_classes = {0, 1};
  in.active = Eval({{0, 0.95, 0.95}, {1, 0.95, 0.95}, {2, 0, 0}}, {0, 1});
  in.candidate = Eval({{0, 0.80, 0.80}, {1, 0.95, 0.95}, {2, 0.9, 0}}, {0, 1});
  in.paired.present = true;
  // Class 0 (100 samples) lost 15 points: 16 right only by the active, 1
  // only by the candidate, far beyond noise.
  in.paired.per_class[0] = {16, 1};
  in.paired.per_class_restricted[0] = {16, 1};
  GateDecision d = DecidePromotion(in, GateOptions{});
  CHECK_FALSE(d.promote);
  CHECK_FALSE(FindCheck(d, "old_class_accuracy", 0)->pass);
  // The same 15 points as 50 against 35 churned samples: within noise.
  in.paired.per_class_restricted[0] = {50, 35};
  GateDecision n = DecidePromotion(in, GateOptions{});
  CHECK(FindCheck(n, "old_class_accuracy", 0)->pass);
  CHECK(FindCheck(n, "old_class_accuracy", 0)->significant == false);
}

TEST_CASE("without labelled held-out data the gate judges agreement with the teacher") {
  GateInput in;
  in.teacher_basis = true;
  in.active.with_teacher = in.candidate.with_teacher = 200;
  in.active.agree = 180;
  in.candidate.agree = 185;
  GateDecision d = DecidePromotion(in, GateOptions{});
  CHECK(d.promote);
  CHECK(d.basis == "teacher_agreement");
  REQUIRE(d.checks.size() == 1);
  CHECK(d.checks[0].value == doctest::Approx(-0.025));
  in.candidate.agree = 170;
  GateDecision r = DecidePromotion(in, GateOptions{});
  CHECK_FALSE(r.promote);
  CHECK(r.reason == "teacher agreement 0.85 vs active 0.9, drops more than 0.005 (no labelled held-out data)");
}

TEST_CASE("a label space of one class has nothing to restrict; an empty one makes every class new") {
  GateInput one;
  one.old_classes = {1};
  one.active = Eval({{1, 0.99, 0.99}, {2, 0.0, 0.0}}, {1});
  one.candidate = Eval({{1, 0.95, 1.0}, {2, 0.9, 0.0}}, {1});
  GateDecision d = DecidePromotion(one, GateOptions{});
  CHECK(d.promote);
  CHECK(FindCheck(d, "old_class_accuracy", 1) == nullptr);
  CHECK(FindCheck(d, "old_class_retention", 1)->pass);

  GateInput none;  // an untrained built-in student knows no class
  none.active = Eval({{0, 1.0, 0}, {1, 0.0, 0}}, {});
  none.candidate = Eval({{0, 0.9, 0}, {1, 0.95, 0}}, {});
  GateDecision n = DecidePromotion(none, GateOptions{});
  CHECK(n.promote);
  CHECK(FindCheck(n, "new_classes_learned")->value == doctest::Approx(0.95));
}

TEST_CASE("an initial student's label space is inferred from what it classifies") {
  EvalResult e = Eval({{0, 0.99, 0}, {1, 0.97, 0}, {2, 0.05, 0}, {3, 0.0, 0}, {4, 0.9, 0, 3}}, {});
  CHECK(InferLabelSpace(e, GateOptions{}) == std::set<int64_t>{0, 1});
}

TEST_CASE("gate options are range-checked by name") {
  GateOptions o;
  CHECK(ValidateGateOptions(o).empty());
  o.min_class_retention = 1.5;
  CHECK(ValidateGateOptions(o) == "min_class_retention must be in [0, 1]");
  o = GateOptions{};
  o.min_class_samples = 0;
  CHECK(ValidateGateOptions(o) == "min_class_samples must be >= 1");
  o = GateOptions{};
  o.regression_z = -1;
  CHECK(ValidateGateOptions(o) == "regression_z must be >= 0");
}

}  // namespace
}  // namespace distilld::learner
