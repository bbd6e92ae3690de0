#include "tests/learner/torch_doctest.h"

#include <cmath>

#include "learner/kd_loss.h"

namespace distilld::learner {
namespace {

torch::Tensor T2(std::initializer_list<float> v, int64_t rows) {
  return torch::tensor(std::vector<float>(v)).reshape({rows, -1});
}
torch::Tensor L(std::initializer_list<int64_t> v) { return torch::tensor(std::vector<int64_t>(v)); }

TEST_CASE("a=1 is plain cross-entropy") {
  // CE([1,2,3], 2) = log(1 + e^-1 + e^-2) = 0.4076059644
  auto r = KdLoss(T2({1, 2, 3}, 1), T2({5, 0, 0}, 1), L({2}), {1.0, 4.0});
  REQUIRE(r.ok());
  CHECK(r->total.item<double>() == doctest::Approx(0.4076059644).epsilon(1e-6));
  CHECK(r->ce == doctest::Approx(0.4076059644).epsilon(1e-6));
  CHECK(r->labelled == 1);
}

TEST_CASE("a=0 is T^2 * KL(teacher || student)") {
  // T=1: p_t = [0.75, 0.25], p_s = [0.5, 0.5]; KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.1308120...
  auto r1 = KdLoss(T2({0, 0}, 1), T2({static_cast<float>(std::log(3.0)), 0}, 1), L({0}), {0.0, 1.0});
  REQUIRE(r1.ok());
  CHECK(r1->total.item<double>() == doctest::Approx(0.75 * std::log(1.5) + 0.25 * std::log(0.5)).epsilon(1e-5));
  CHECK(r1->total.item<double>() == doctest::Approx(0.130812).epsilon(1e-4));
  // T=2: p_t = softmax([ln3/2, 0]) = [0.633975, 0.366025]; 4*KL = 0.145392
  auto r2 = KdLoss(T2({0, 0}, 1), T2({static_cast<float>(std::log(3.0)), 0}, 1), L({1}), {0.0, 2.0});
  REQUIRE(r2.ok());
  CHECK(r2->total.item<double>() == doctest::Approx(0.145392).epsilon(1e-4));
}

TEST_CASE("unlabelled samples get only the KD term, at full weight") {
  torch::Tensor s = T2({0, 0, 1, 2, 3, 0}, 2);   // sample 0: [0,0,1]; sample 1: [2,3,0]
  torch::Tensor t = T2({1, 0, 0, 0, 1, 0}, 2);
  const double temp = 2.0, a = 0.5;
  auto kl = [&](int row) {
    torch::Tensor lps = torch::log_softmax(s[row] / temp, 0), lpt = torch::log_softmax(t[row] / temp, 0);
    return (lpt.exp() * (lpt - lps)).sum().item<double>() * temp * temp;
  };
  const double ce0 = -torch::log_softmax(s[0], 0)[2].item<double>();
  auto r = KdLoss(s, t, L({2, -1}), {a, temp});
  REQUIRE(r.ok());
  CHECK(r->labelled == 1);
  CHECK(r->total.item<double>() == doctest::Approx((a * ce0 + (1 - a) * kl(0) + kl(1)) / 2).epsilon(1e-6));
  CHECK(r->ce == doctest::Approx(ce0).epsilon(1e-6));

  // All unlabelled with a=1: still learns from the teacher.
  auto u = KdLoss(s, t, L({-1, -1}), {1.0, temp});
  REQUIRE(u.ok());
  CHECK(u->total.item<double>() == doctest::Approx((kl(0) + kl(1)) / 2).epsilon(1e-6));
}

TEST_CASE("no teacher means CE over labelled samples; no signal at all is an error") {
  auto r = KdLoss(T2({1, 2, 3, 0, 0, 0}, 2), torch::Tensor(), L({2, -1}), {0.3, 4.0});
  REQUIRE(r.ok());
  CHECK(r->total.item<double>() == doctest::Approx(0.4076059644).epsilon(1e-6));
  auto bad = KdLoss(T2({1, 2}, 1), torch::Tensor(), L({-1}), {0.5, 4.0});
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(KdLoss(T2({1, 2}, 1), T2({1, 2, 3}, 1), L({0}), {}).status().code() == StatusCode::kInvalidArgument);
  CHECK(KdLoss(T2({1, 2}, 1), T2({1, 2}, 1), L({5}), {}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("gradients are non-zero for both terms") {
  for (double a : {0.0, 0.5, 1.0}) {
    CAPTURE(a);
    torch::Tensor s = T2({0.1f, 0.2f, 0.3f, 1, -1, 0}, 2).set_requires_grad(true);
    auto r = KdLoss(s, T2({2, 0, 0, 0, 0, 2}, 2), L({1, -1}), {a, 3.0});
    REQUIRE(r.ok());
    r->total.backward();
    REQUIRE(s.grad().defined());
    CHECK(s.grad().abs().sum().item<double>() > 1e-4);
    CHECK(s.grad()[0].abs().sum().item<double>() > 1e-6);
    CHECK(s.grad()[1].abs().sum().item<double>() > 1e-6);
  }
}

TEST_CASE("the fused loss equals the op-by-op loss in value and gradient") {
  torch::manual_seed(7);
  for (bool teacher : {true, false}) {
    for (double a : {0.0, 0.3, 1.0}) {
      for (double temp : {1.0, 4.0}) {
        CAPTURE(teacher);
        CAPTURE(a);
        CAPTURE(temp);
        torch::Tensor base = torch::randn({16, 7}) * 3;
        torch::Tensor t = teacher ? torch::randn({16, 7}) * 3 : torch::Tensor();
        torch::Tensor labels = torch::randint(0, 7, {16}, torch::kInt64);
        labels.index_put_({torch::arange(0, 16, 3)}, -1);  // some unlabelled
        KdLossTerms r[2];
        torch::Tensor grad[2];
        for (int fused = 0; fused < 2; ++fused) {
          torch::Tensor s = base.clone().set_requires_grad(true);
          KdLossOptions o{a, temp};
          o.fused = fused == 1;
          auto res = KdLoss(s, t, labels, o);
          REQUIRE(res.ok());
          r[fused] = *res;
          r[fused].total.backward();
          grad[fused] = s.grad();
        }
        CHECK(r[1].total.item<double>() == doctest::Approx(r[0].total.item<double>()).epsilon(1e-6));
        CHECK(r[1].ce == doctest::Approx(r[0].ce).epsilon(1e-6));
        CHECK(r[1].kd == doctest::Approx(r[0].kd).epsilon(1e-6));
        CHECK(r[1].labelled == r[0].labelled);
        CHECK((grad[1] - grad[0]).abs().max().item<double>() < 1e-6);
        CHECK(grad[0].abs().max().item<double>() > 1e-3);
      }
    }
  }
  // The fused path takes a non-contiguous student too, and checks labels the same way.
  torch::Tensor st = torch::randn({5, 4}).t().set_requires_grad(true);
  auto r = KdLoss(st, torch::randn({4, 5}), L({0, 4, -1, 2}), {0.5, 2.0});
  REQUIRE(r.ok());
  KdLossOptions slow{0.5, 2.0};
  slow.fused = false;
  torch::Tensor t2 = torch::randn({4, 5});
  auto a = KdLoss(st, t2, L({0, 4, -1, 2}), {0.5, 2.0});
  auto b = KdLoss(st, t2, L({0, 4, -1, 2}), slow);
  REQUIRE((a.ok() && b.ok()));
  CHECK(a->total.item<double>() == doctest::Approx(b->total.item<double>()).epsilon(1e-6));
  CHECK(KdLoss(st, t2, L({0, 5, -1, 2}), {}).status().code() == StatusCode::kInvalidArgument);
  CHECK(KdLoss(st, torch::Tensor(), L({-1, -1, -1, -1}), {}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("temperature schedule") {
  TemperatureScheduleOptions c{2.0, 8.0, config::TemperatureCurve::kConstant};
  CHECK(TemperatureAt(c, 5, 10) == 2.0);
  TemperatureScheduleOptions lin{2.0, 8.0, config::TemperatureCurve::kLinear};
  CHECK(TemperatureAt(lin, 0, 4) == doctest::Approx(2.0));
  CHECK(TemperatureAt(lin, 1, 4) == doctest::Approx(4.0));
  CHECK(TemperatureAt(lin, 3, 4) == doctest::Approx(8.0));
  TemperatureScheduleOptions cos{2.0, 8.0, config::TemperatureCurve::kCosine};
  CHECK(TemperatureAt(cos, 0, 3) == doctest::Approx(2.0));
  CHECK(TemperatureAt(cos, 1, 3) == doctest::Approx(5.0));
  CHECK(TemperatureAt(cos, 2, 3) == doctest::Approx(8.0));
  CHECK(ValidateSchedule(lin).ok());
  CHECK(ValidateSchedule({0, 2, config::TemperatureCurve::kLinear}).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("feature loss with a learned projection when widths differ") {
  FeatureProjector same(4, 4);
  CHECK(same->identity());
  torch::Tensor fs = torch::ones({3, 4}), ft = torch::zeros({3, 4});
  auto l = FeatureLoss(same, fs, ft, 0.5);
  REQUIRE(l.ok());
  CHECK(l->item<double>() == doctest::Approx(0.5));

  FeatureProjector proj(4, 6);
  CHECK_FALSE(proj->identity());
  torch::Tensor target = torch::randn({3, 6});
  auto l2 = FeatureLoss(proj, torch::randn({3, 4}), target, 1.0);
  REQUIRE(l2.ok());
  l2->backward();
  double g = 0;
  for (const auto& p : proj->parameters()) g += p.grad().abs().sum().item<double>();
  CHECK(g > 0);
  CHECK(FeatureLoss(proj, torch::randn({3, 4}), torch::randn({3, 5}), 1.0).status().code() ==
        StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace distilld::learner
