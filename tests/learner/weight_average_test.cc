// Tests for learner/weight_average.h: the moving average of a module's
// parameters and float buffers, its warm-up, and what it leaves alone.
#include "learner/weight_average.h"

#include "tests/learner/torch_doctest.h"

namespace distilld::learner {
namespace {

// A module with one parameter, one float buffer (like BatchNorm's running
// mean) and one integer buffer (like num_batches_tracked).
torch::jit::Module Small(float w, float mean, int64_t count) {
  torch::jit::Module m("Small");
  m.register_parameter("w", torch::full({2}, w), false);
  m.register_buffer("running_mean", torch::full({2}, mean));
  m.register_buffer("count", torch::full({1}, count, torch::kInt64));
  return m;
}

void Set(torch::jit::Module& m, float w, float mean, int64_t count) {
  torch::NoGradGuard no_grad;
  m.attr("w").toTensor().fill_(w);
  m.attr("running_mean").toTensor().fill_(mean);
  m.attr("count").toTensor().fill_(count);
}

float At(const torch::jit::Module& m, const char* name) {
  return m.attr(name).toTensor()[0].item<float>();
}

TEST_CASE("weight average: warm-up, then the decay, over parameters and float buffers") {
  torch::jit::Module m = Small(0, 0, 0);
  WeightAverage avg(m, 0.5);
  // Update 0 uses min(0.5, 1/10) = 0.1: avg = 0.1 * 0 + 0.9 * 10 = 9.
  Set(m, 10, 20, 7);
  REQUIRE(avg.Update(m).ok());
  // Update 1 uses min(0.5, 2/11): avg = (2/11) * 9 + (9/11) * 10.
  Set(m, 10, 20, 7);
  REQUIRE(avg.Update(m).ok());
  const double d1 = 2.0 / 11.0;
  const double want_w = d1 * 9 + (1 - d1) * 10;
  const double want_mean = d1 * 18 + (1 - d1) * 20;
  // Many updates later (0.5 wins) the average has converged to the value.
  for (int i = 0; i < 40; ++i) REQUIRE(avg.Update(m).ok());
  CHECK(avg.updates() == 42);
  torch::jit::Module out = Small(-1, -1, 3);
  REQUIRE(avg.CopyTo(out).ok());
  CHECK(At(out, "w") == doctest::Approx(10).epsilon(1e-5));
  CHECK(At(out, "running_mean") == doctest::Approx(20).epsilon(1e-5));
  // The integer buffer is not averaged: CopyTo leaves the target's own.
  CHECK(out.attr("count").toTensor()[0].item<int64_t>() == 3);

  // The two-update value, checked separately.
  torch::jit::Module m2 = Small(0, 0, 0);
  WeightAverage avg2(m2, 0.5);
  Set(m2, 10, 20, 0);
  REQUIRE(avg2.Update(m2).ok());
  REQUIRE(avg2.Update(m2).ok());
  torch::jit::Module out2 = Small(0, 0, 0);
  REQUIRE(avg2.CopyTo(out2).ok());
  CHECK(At(out2, "w") == doctest::Approx(want_w).epsilon(1e-5));
  CHECK(At(out2, "running_mean") == doctest::Approx(want_mean).epsilon(1e-5));
}

TEST_CASE("weight average: holds copies, not the module's tensors") {
  torch::jit::Module m = Small(1, 1, 0);
  WeightAverage avg(m, 0.9);
  REQUIRE(avg.CopyTo(m).ok());  // no updates yet: the starting weights
  CHECK(At(m, "w") == doctest::Approx(1));
  Set(m, 5, 5, 0);  // training moves the module; the average must not follow
  torch::jit::Module out = Small(0, 0, 0);
  REQUIRE(avg.CopyTo(out).ok());
  CHECK(At(out, "w") == doctest::Approx(1));
  Set(out, 8, 8, 0);  // nor does writing into a copy target change it
  REQUIRE(avg.CopyTo(m).ok());
  CHECK(At(m, "w") == doctest::Approx(1));
}

TEST_CASE("weight average: a module of another structure is refused") {
  torch::jit::Module m = Small(0, 0, 0);
  WeightAverage avg(m, 0.9);
  torch::jit::Module other("Other");
  other.register_parameter("w", torch::zeros({2}), false);
  Status s = avg.Update(other);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(avg.CopyTo(other).code() == StatusCode::kInvalidArgument);
  torch::jit::Module reshaped("Small");
  reshaped.register_parameter("w", torch::zeros({3}), false);
  reshaped.register_buffer("running_mean", torch::zeros({2}));
  reshaped.register_buffer("count", torch::zeros({1}, torch::kInt64));
  CHECK(avg.Update(reshaped).code() == StatusCode::kInvalidArgument);
  CHECK(avg.updates() == 0);
}

}  // namespace
}  // namespace distilld::learner
