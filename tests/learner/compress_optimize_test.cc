// OptimizeForServing keeps outputs (float and int8 built-ins) and methods.
#include "tests/learner/torch_doctest.h"

#include "learner/model/arch.h"
#include "learner/model/optimize.h"
#include "learner/quantize.h"
#include "tests/learner/compress_test_data.h"

namespace distilld::learner {
namespace {

TEST_CASE("freeze + optimize_for_inference gives the trained module's outputs") {
  torch::Tensor x = testdata::Quadrants(16, 5).images;
  for (ArchSpec spec : {ArchSpec{"mlp", {1, 8, 8}, 4, {32, 16}, {}}, ArchSpec{"cnn", {1, 8, 8}, 4, {16}, {6, 8}}}) {
    CAPTURE(spec.kind);
    auto m = BuildModel(spec, 6);
    REQUIRE(m.ok());
    auto opt = OptimizeForServing(*m);
    REQUIRE(opt.ok());
    torch::NoGradGuard g;
    torch::Tensor want = m->forward({x}).toTensor();
    CHECK(torch::allclose(opt->forward({x}).toTensor(), want, 1e-5, 1e-5));
    CHECK(torch::allclose(opt->get_method("features")({x}).toTensor(),
                          m->get_method("features")({x}).toTensor(), 1e-5, 1e-5));
    // Frozen: weights are constants now, not parameters.
    CHECK(opt->parameters().size() == 0);
    // The source module is untouched and still trainable.
    CHECK(m->parameters().size() > 0);
    OptimizeOptions freeze_only;
    freeze_only.optimize_for_inference = false;
    auto frozen = OptimizeForServing(*m, freeze_only);
    REQUIRE(frozen.ok());
    CHECK(torch::allclose(frozen->forward({x}).toTensor(), want, 1e-5, 1e-5));
  }
}

TEST_CASE("an int8 module survives optimization with the same outputs") {
  REQUIRE(UseQuantizedEngine().ok());
  ArchSpec spec{"cnn", {1, 8, 8}, 4, {16}, {6, 8}};
  auto m = BuildModel(spec, 6);
  REQUIRE(m.ok());
  auto q = QuantizeDynamicInt8(*m, spec);
  REQUIRE(q.ok());
  auto opt = OptimizeForServing(*q);
  REQUIRE(opt.ok());
  torch::Tensor x = testdata::Quadrants(16, 5).images;
  torch::NoGradGuard g;
  CHECK(torch::allclose(opt->forward({x}).toTensor(), q->forward({x}).toTensor(), 1e-5, 1e-5));
}

}  // namespace
}  // namespace distilld::learner
