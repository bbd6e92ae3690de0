// Structured pruning: real removal, the kept units compute what they did,
// scores follow the documented measure, and KD recovers accuracy.
#include "tests/learner/torch_doctest.h"

#include "learner/compress_train.h"
#include "learner/evaluate.h"
#include "learner/model/arch.h"
#include "learner/offline.h"
#include "learner/prune.h"
#include "tests/learner/compress_test_data.h"

namespace distilld::learner {
namespace {

ArchSpec Mlp() { return {"mlp", {1, 8, 8}, 4, {32, 16}, {}}; }
ArchSpec Cnn() { return {"cnn", {1, 8, 8}, 4, {16}, {6, 8}}; }

torch::Tensor P(const torch::jit::Module& m, const std::string& name) { return m.attr(name).toTensor(); }

// Scores that keep the even-numbered units of every layer.
UnitScores KeepEven(const ArchSpec& s) {
  auto even = [](int64_t w) {
    return (torch::arange(w, torch::kLong).remainder(2) == 0).to(torch::kFloat32) + 0.5;
  };
  UnitScores u;
  if (s.kind == "cnn") {
    for (int64_t c : s.channels) u.conv.push_back(even(c));
  }
  for (int64_t h : s.hidden) u.hidden.push_back(even(h));
  return u;
}

ArchSpec Halved(ArchSpec s) {
  for (auto& h : s.hidden) h = (h + 1) / 2;
  if (s.kind == "cnn") {
    for (auto& c : s.channels) c = (c + 1) / 2;
  }
  return s;
}

// The original with every odd unit silenced by zeroing the weights that read
// it: the function the pruned module must compute exactly.
torch::jit::Module SilenceOdd(const torch::jit::Module& m, const ArchSpec& s) {
  torch::jit::Module c = m.clone();
  torch::NoGradGuard g;
  auto zero_cols = [&](const std::string& name, int64_t width, int64_t block) {
    torch::Tensor w = P(c, name).detach().clone();
    for (int64_t j = 1; j < width; j += 2) w.slice(1, j * block, (j + 1) * block).zero_();
    c.setattr(name, w);
  };
  if (s.kind == "cnn") {
    for (size_t i = 0; i < s.channels.size(); ++i) {
      if (i + 1 < s.channels.size()) {
        torch::Tensor w = P(c, "conv" + std::to_string(i + 1) + "_weight").detach().clone();
        for (int64_t j = 1; j < s.channels[i]; j += 2) w.select(1, j).zero_();
        c.setattr("conv" + std::to_string(i + 1) + "_weight", w);
      } else {
        const int64_t fc_in = P(c, "fc0_weight").size(1);
        zero_cols("fc0_weight", s.channels[i], fc_in / s.channels[i]);
      }
    }
  }
  for (size_t i = 0; i < s.hidden.size(); ++i) {
    const std::string next = i + 1 < s.hidden.size() ? "fc" + std::to_string(i + 1) + "_weight" : "out_weight";
    zero_cols(next, s.hidden[i], 1);
  }
  return c;
}

TEST_CASE("pruning removes units for real and the kept units compute what they did") {
  for (const ArchSpec& spec : {Mlp(), Cnn()}) {
    CAPTURE(spec.kind);
    auto m = BuildModel(spec, 3);
    REQUIRE(m.ok());
    ArchSpec to = Halved(spec);
    auto pruned = PruneToWidths(*m, spec, KeepEven(spec), to);
    REQUIRE(pruned.ok());
    // Smaller and dense: exactly the parameter count of a built-in at the
    // new widths, recognised as such.
    CHECK(CountParameters(*pruned) == ArchParameterCount(to));
    CHECK(CountParameters(*pruned) < CountParameters(*m));
    auto inferred = InferArchSpec(*pruned, spec.input_shape);
    REQUIRE(inferred.ok());
    CHECK(inferred->hidden == to.hidden);
    if (spec.kind == "cnn") CHECK(inferred->channels == to.channels);
    for (const auto& p : pruned->parameters()) CHECK(p.is_contiguous());

    torch::Tensor x = testdata::Quadrants(32, 9).images;
    torch::NoGradGuard g;
    torch::Tensor want = SilenceOdd(*m, spec).forward({x}).toTensor();
    torch::Tensor got = pruned->forward({x}).toTensor();
    CHECK(torch::allclose(got, want, 1e-5, 1e-5));
    // And the full model computes something else (the removed units mattered).
    CHECK_FALSE(torch::allclose(m->forward({x}).toTensor(), want, 1e-3, 1e-3));
  }
}

TEST_CASE("scores are mean |activation| times outgoing weight norm") {
  ArchSpec spec = Mlp();
  auto m = BuildModel(spec, 5);
  REQUIRE(m.ok());
  {
    torch::NoGradGuard g;
    torch::Tensor ow = P(*m, "out_weight").detach().clone();
    ow.select(1, 3).zero_();  // unit 3 of the last hidden layer is never read
    m->setattr("out_weight", ow);
  }
  torch::Tensor x = testdata::Quadrants(64, 2).images;
  auto s = ScoreUnits(*m, spec, x, /*batch_size=*/10);
  REQUIRE(s.ok());
  REQUIRE(s->hidden.size() == 2);
  CHECK(s->hidden[0].size(0) == 32);
  CHECK(s->hidden[1][3].item<float>() == 0.0f);
  // The last layer's scores from the module's own `features` method.
  torch::NoGradGuard g;
  torch::Tensor f = m->get_method("features")({x}).toTensor();
  torch::Tensor want = f.abs().mean(0) * P(*m, "out_weight").pow(2).sum(0).sqrt();
  CHECK(torch::allclose(s->hidden[1], want, 1e-5, 1e-6));
  CHECK((s->hidden[0] >= 0).all().item<bool>());

  ArchSpec cnn = Cnn();
  auto c = BuildModel(cnn, 5);
  REQUIRE(c.ok());
  auto cs = ScoreUnits(*c, cnn, x);
  REQUIRE(cs.ok());
  REQUIRE(cs->conv.size() == 2);
  CHECK(cs->conv[0].size(0) == 6);
  CHECK(cs->conv[1].size(0) == 8);
  CHECK(ScoreUnits(*c, spec, x).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("budget widths meet the target cost") {
  ArchSpec spec = {"cnn", {1, 28, 28}, 10, {64}, {16, 32}};
  const int64_t full = ArchParameterCount(spec);
  ArchSpec half = WidthsForBudget(spec, full / 2, false);
  CHECK(ArchParameterCount(half) <= full / 2);
  CHECK(ArchParameterCount(half) > full / 3);
  CHECK(half.channels[1] < 32);
  ArchSpec macs = WidthsForBudget(spec, ArchMacs(spec) / 4, true);
  CHECK(ArchMacs(macs) <= ArchMacs(spec) / 4);
  CHECK(WidthsForBudget(spec, full, false).hidden == spec.hidden);
}

TEST_CASE("gradual pruning with KD recovery keeps a tiny task's accuracy") {
  Dataset train = testdata::Quadrants(1200, 1);
  Dataset holdout = testdata::Quadrants(400, 2);
  // Teacher and student trained briefly on labels.
  ArchSpec tspec = {"mlp", {1, 8, 8}, 4, {64}, {}};
  auto teacher = BuildModel(tspec, 1);
  REQUIRE(teacher.ok());
  internal::KdRunOptions run;
  run.steps = 300;
  run.loss.alpha = 1.0;
  REQUIRE(internal::RunKdSteps(*teacher, train, torch::Tensor(), run).ok());
  ArchSpec sspec = {"mlp", {1, 8, 8}, 4, {48, 24}, {}};
  auto student = BuildModel(sspec, 2);
  REQUIRE(student.ok());
  REQUIRE(internal::RunKdSteps(*student, train, torch::Tensor(), run).ok());

  PruneOptions o;
  o.student = *student;
  o.spec = sspec;
  o.teacher = &*teacher;
  o.train = train;
  o.holdout = holdout;
  o.target_fraction = 0.75;
  o.steps = 3;
  o.recovery_steps = 150;
  o.threads = 1;
  auto r = PruneWithRecovery(o);
  REQUIRE(r.ok());
  MESSAGE(r->ToText());
  CHECK(r->steps.size() == 3);
  CHECK(r->params_after <= r->params_before / 4);
  CHECK(CountParameters(r->module) == r->params_after);
  // Costs shrink step by step.
  CHECK(r->steps[0].params > r->steps[1].params);
  CHECK(r->steps[1].params > r->steps[2].params);
  CHECK(r->accuracy_before > 0.9);
  // Recovery never makes a step worse and ends close to the unpruned student.
  for (const auto& s : r->steps) CHECK(s.accuracy_recovered >= s.accuracy_pruned);
  CHECK(r->steps.back().accuracy_recovered >= r->accuracy_before - 0.03);
  // The input student is untouched.
  CHECK(CountParameters(*student) == ArchParameterCount(sspec));

  PruneOptions bad = o;
  bad.target_fraction = 1.0;
  CHECK(PruneWithRecovery(bad).status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distilld::learner
