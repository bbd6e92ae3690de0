// Tests for learner/recycle.h: dormant units of built-in students are
// re-drawn without changing what the module computes.
#include "learner/recycle.h"

#include <random>

#include "learner/model_builder.h"
#include "learner/model_io.h"
#include "tests/learner/torch_doctest.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

torch::Tensor Param(const torch::jit::Module& m, const std::string& name) {
  return m.attr(name).toTensor();
}

torch::Tensor Logits(torch::jit::Module& m, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return m.forward({x}).toTensor();
}

// Makes every unit fire on every input in [0, 1] (non-negative weights,
// positive biases), so the only dormant units are those a test kills.
void MakeAlive(torch::jit::Module& m) {
  torch::NoGradGuard no_grad;
  for (const auto& p : m.named_parameters()) {
    if (p.name.find("_bias") != std::string::npos) {
      p.value.fill_(0.1);
    } else {
      p.value.abs_();
    }
  }
}

// Silences unit j of `layer` for inputs in [0, 1]: zero weights, bias -1.
void Kill(torch::jit::Module& m, const std::string& layer, int64_t j) {
  torch::NoGradGuard no_grad;
  Param(m, layer + "_weight")[j].zero_();
  Param(m, layer + "_bias")[j].fill_(-1.0);
}

torch::jit::Module Mlp(std::vector<int64_t> hidden) {
  ArchSpec spec;
  spec.kind = "mlp";
  spec.input_shape = {1, 6, 6};
  spec.classes = 4;
  spec.hidden = std::move(hidden);
  auto m = BuildModel(spec, 11);
  REQUIRE(m.ok());
  MakeAlive(*m);
  return *m;
}

TEST_CASE("dead MLP units get new incoming weights and zero outgoing ones; outputs do not change") {
  torch::jit::Module m = Mlp({8, 5});
  Kill(m, "fc0", 2);
  Kill(m, "fc0", 5);
  Kill(m, "fc1", 3);
  torch::manual_seed(1);
  const torch::Tensor x = torch::rand({200, 1, 6, 6});
  const torch::Tensor before = Logits(m, x);
  const torch::Tensor fc0 = Param(m, "fc0_weight").clone(), fc1 = Param(m, "fc1_weight").clone();

  std::mt19937_64 rng(5);
  auto stats = RecycleDormantUnits(m, x, RecycleOptions{}, rng);
  REQUIRE(stats.ok());
  CHECK(stats->units == 13);
  CHECK(stats->recycled == 3);
  CHECK(torch::equal(Logits(m, x), before));

  torch::Tensor w0 = Param(m, "fc0_weight");
  for (int64_t j = 0; j < 8; ++j) {
    if (j == 2 || j == 5) {
      CHECK(w0[j].abs().sum().item<float>() > 0);             // re-drawn
      CHECK(w0[j].abs().max().item<float>() <= 1.0f / 6.0f);  // within U(-1/sqrt(36), 1/sqrt(36))
      // Nothing flows on yet, except into fc1's unit 3, itself re-drawn
      // and silenced at the output.
      torch::Tensor column = Param(m, "fc1_weight").select(1, j);
      CHECK(column.narrow(0, 0, 3).abs().sum().item<float>() == 0);
      CHECK(column.narrow(0, 4, 1).abs().sum().item<float>() == 0);
    } else {
      CHECK(torch::equal(w0[j], fc0[j]));
    }
  }
  CHECK(Param(m, "out_weight").select(1, 3).abs().sum().item<float>() == 0);
  // fc1's live units keep their weights from fc0's live units.
  CHECK(torch::equal(Param(m, "fc1_weight")[0].select(0, 0), fc1[0].select(0, 0)));
  CHECK(!torch::equal(Param(m, "fc1_weight")[3], fc1[3]));
}

TEST_CASE("a recycled unit fires again, so its outgoing weights get a gradient") {
  torch::jit::Module m = Mlp({6});
  Kill(m, "fc0", 1);
  torch::manual_seed(2);
  const torch::Tensor x = torch::rand({64, 1, 6, 6});
  auto grad_of_column = [&] {
    torch::Tensor w = Param(m, "out_weight");
    w.set_requires_grad(true);
    if (w.grad().defined()) w.grad().zero_();
    m.forward({x}).toTensor().pow(2).sum().backward();
    return w.grad().select(1, 1).abs().sum().item<float>();
  };
  CHECK(grad_of_column() == 0.0f);  // dead: no signal reaches it
  std::mt19937_64 rng(3);
  auto stats = RecycleDormantUnits(m, x, RecycleOptions{}, rng);
  REQUIRE(stats.ok());
  REQUIRE(stats->recycled >= 1);
  // The re-drawn unit is alive on these inputs unless its random bias and
  // weights happen to silence it; seed 3 does not.
  CHECK(grad_of_column() > 0.0f);
}

TEST_CASE("the threshold also recycles units that fire far less than their layer") {
  torch::jit::Module m = Mlp({4});
  {
    torch::NoGradGuard no_grad;
    // Unit 0 fires on almost nothing: only pixel 0 drives it, above 0.95.
    Param(m, "fc0_weight")[0].zero_();
    Param(m, "fc0_weight")[0][0] = 1.0;
    Param(m, "fc0_bias")[0] = -0.95;
  }
  torch::manual_seed(4);
  const torch::Tensor x = torch::rand({500, 1, 6, 6});
  std::mt19937_64 rng(1);
  auto strict = RecycleDormantUnits(m, x, RecycleOptions{}, rng);
  REQUIRE(strict.ok());
  CHECK(strict->recycled == 0);  // it fires on some inputs: not dead
  RecycleOptions loose;
  loose.threshold = 0.1;
  auto relaxed = RecycleDormantUnits(m, x, loose, rng);
  REQUIRE(relaxed.ok());
  CHECK(relaxed->recycled == 1);
}

TEST_CASE("dead CNN channels: the next conv's input channel or the flattened block is zeroed") {
  ArchSpec spec;
  spec.kind = "cnn";
  spec.input_shape = {1, 8, 8};
  spec.classes = 3;
  spec.channels = {4, 5};
  spec.hidden = {};
  auto built = BuildModel(spec, 9);
  REQUIRE(built.ok());
  torch::jit::Module m = *built;
  MakeAlive(m);
  Kill(m, "conv0", 1);
  Kill(m, "conv1", 4);
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({50, 1, 8, 8});
  const torch::Tensor before = Logits(m, x);
  std::mt19937_64 rng(2);
  auto stats = RecycleDormantUnits(m, x, RecycleOptions{}, rng);
  REQUIRE(stats.ok());
  CHECK(stats->units == 9);
  CHECK(stats->recycled == 2);
  CHECK(torch::allclose(Logits(m, x), before, 0, 0));
  // conv1's live channels no longer read conv0's channel 1 (channel 4 was
  // re-drawn whole and is silenced at the output).
  CHECK(Param(m, "conv1_weight").narrow(0, 0, 4).select(1, 1).abs().sum().item<float>() == 0);
  // conv1's output is 5 channels of 2x2 after two pools: channel 4 feeds
  // columns 16..19 of the output layer.
  torch::Tensor out = Param(m, "out_weight");
  CHECK(out.size(1) == 20);
  CHECK(out.narrow(1, 16, 4).abs().sum().item<float>() == 0);
  CHECK(out.narrow(1, 12, 4).abs().sum().item<float>() > 0);
}

TEST_CASE(
    "a built-in saved and loaded again (how the learner gets its active version) is still "
    "recognised") {
  testing::TempDir dir;
  torch::jit::Module m = Mlp({6});
  Kill(m, "fc0", 4);
  auto saved = SaveModelAtomic(m, dir.str("v.pt"));
  REQUIRE(saved.ok());
  for (int load = 0; load < 2; ++load) {  // a second load gets a mangled type name
    auto loaded = LoadModel(saved->path, saved->sha256);
    REQUIRE(loaded.ok());
    torch::jit::Module copy = loaded->deepcopy();
    std::mt19937_64 rng(1);
    auto stats = RecycleDormantUnits(copy, torch::rand({30, 1, 6, 6}), RecycleOptions{}, rng);
    REQUIRE(stats.ok());
    CHECK(stats->recycled == 1);
  }
}

TEST_CASE("recycling is deterministic for a given generator state") {
  torch::jit::Module a = Mlp({8});
  torch::jit::Module b = Mlp({8});
  Kill(a, "fc0", 0);
  Kill(b, "fc0", 0);
  const torch::Tensor x = torch::rand({20, 1, 6, 6});
  std::mt19937_64 ra(7), rb(7);
  REQUIRE(RecycleDormantUnits(a, x, RecycleOptions{}, ra).ok());
  REQUIRE(RecycleDormantUnits(b, x, RecycleOptions{}, rb).ok());
  CHECK(torch::equal(Param(a, "fc0_weight"), Param(b, "fc0_weight")));
}

TEST_CASE(
    "modules that are not built-ins and unusable inputs are refused, leaving the module as it "
    "was") {
  torch::jit::Module custom("Custom");
  custom.register_parameter("fc0_weight", torch::zeros({3, 4}), false);
  custom.register_parameter("fc0_bias", torch::full({3}, -1.0), false);
  custom.register_parameter("out_weight", torch::ones({2, 3}), false);
  custom.register_parameter("out_bias", torch::zeros({2}), false);
  custom.define(
      "def forward(self, x):\n  return torch.linear(torch.relu(torch.linear(x, self.fc0_weight, "
      "self.fc0_bias)), self.out_weight, self.out_bias)\n");
  std::mt19937_64 rng(1);
  auto refused = RecycleDormantUnits(custom, torch::rand({5, 4}), RecycleOptions{}, rng);
  CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
  CHECK(Param(custom, "out_weight").sum().item<float>() == 6.0f);

  torch::jit::Module m = Mlp({4});
  const torch::Tensor w = Param(m, "fc0_weight").clone();
  CHECK(RecycleDormantUnits(m, torch::rand({5, 1, 7, 7}), RecycleOptions{}, rng).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(RecycleDormantUnits(m, torch::rand({0, 1, 6, 6}), RecycleOptions{}, rng).status().code() ==
        StatusCode::kInvalidArgument);
  RecycleOptions negative;
  negative.threshold = -1;
  CHECK(RecycleDormantUnits(m, torch::rand({5, 1, 6, 6}), negative, rng).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(torch::equal(Param(m, "fc0_weight"), w));
}

}  // namespace
}  // namespace distilld::learner
