// Tests for learner/recycle.h: dormant units of built-in students and of
// users' own modules are re-drawn without changing what the module computes.
#include "learner/recycle.h"

#include <random>

#include "learner/model/arch.h"
#include "learner/model/model_io.h"
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
  const torch::Tensor alive = Param(m, "fc0_weight").narrow(0, 1, 3).clone();
  auto relaxed = RecycleDormantUnits(m, x, loose, rng);
  REQUIRE(relaxed.ok());
  CHECK(relaxed->recycled == 1);
  CHECK(torch::equal(Param(m, "fc0_weight").narrow(0, 1, 3), alive));
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

// A user's module as Python exports it: submodules with `weight` and `bias`
// (and BatchNorm's running statistics as buffers), called from forward.
torch::jit::Module UserLinear(int64_t in, int64_t out, uint64_t seed) {
  torch::jit::Module m("UserLinear");
  torch::manual_seed(seed);
  m.register_parameter("weight", torch::rand({out, in}) * 0.3, false);
  m.register_parameter("bias", torch::full({out}, 0.1), false);
  m.define("def forward(self, x):\n  return torch.linear(x, self.weight, self.bias)\n");
  return m;
}

torch::jit::Module UserConv(int64_t in, int64_t out, uint64_t seed) {
  torch::jit::Module m("UserConv");
  torch::manual_seed(seed);
  m.register_parameter("weight", torch::rand({out, in, 3, 3}) * 0.3, false);
  m.register_parameter("bias", torch::full({out}, 0.1), false);
  m.define("def forward(self, x):\n  return torch.conv2d(x, self.weight, self.bias, [1, 1], [1, 1])\n");
  return m;
}

torch::jit::Module UserBatchNorm(int64_t channels) {
  torch::jit::Module m("UserBatchNorm");
  m.register_parameter("weight", torch::ones({channels}), false);
  m.register_parameter("bias", torch::zeros({channels}), false);
  m.register_buffer("running_mean", torch::full({channels}, 0.2));
  m.register_buffer("running_var", torch::full({channels}, 0.5));
  m.define(
      "def forward(self, x):\n  return torch.batch_norm(x, self.weight, self.bias, self.running_mean, "
      "self.running_var, False, 0.1, 1e-5, False)\n");
  return m;
}

TEST_CASE("a user's MLP of submodules is recycled through its parameter list, not its type name") {
  torch::jit::Module m("MLP");  // the name a Python class gives it
  m.register_module("fc1", UserLinear(36, 6, 1));
  m.register_module("fc2", UserLinear(6, 4, 2));
  m.define(
      "def forward(self, x):\n  return self.fc2.forward(torch.relu(self.fc1.forward(x.flatten(1))))\n");
  torch::jit::Module fc1 = m.attr("fc1").toModule(), fc2 = m.attr("fc2").toModule();
  {
    torch::NoGradGuard no_grad;
    fc1.attr("weight").toTensor()[2].zero_();
    fc1.attr("bias").toTensor()[2].fill_(-1.0);
  }
  torch::manual_seed(3);
  const torch::Tensor x = torch::rand({100, 1, 6, 6});
  const torch::Tensor before = Logits(m, x);
  std::mt19937_64 rng(4);
  auto stats = RecycleDormantUnits(m, x, RecycleOptions{}, rng);
  REQUIRE(stats.ok());
  CHECK(stats->units == 6);
  CHECK(stats->recycled == 1);
  CHECK(torch::equal(Logits(m, x), before));
  CHECK(fc1.attr("weight").toTensor()[2].abs().sum().item<float>() > 0);
  CHECK(fc2.attr("weight").toTensor().select(1, 2).abs().sum().item<float>() == 0);
  CHECK(fc2.attr("weight").toTensor().select(1, 1).abs().sum().item<float>() > 0);
}

TEST_CASE("a user's CNN with BatchNorm: a channel silenced by its BatchNorm is recycled and the norm reset") {
  torch::jit::Module m("CNN");
  m.register_module("conv1", UserConv(1, 4, 1));
  m.register_module("bn1", UserBatchNorm(4));
  m.register_module("conv2", UserConv(4, 5, 2));
  m.register_module("bn2", UserBatchNorm(5));
  m.register_module("fc", UserLinear(5 * 2 * 2, 3, 3));
  m.define(
      "def forward(self, x):\n"
      "  h = torch.max_pool2d(torch.relu(self.bn1.forward(self.conv1.forward(x))), [2, 2])\n"
      "  h = torch.max_pool2d(torch.relu(self.bn2.forward(self.conv2.forward(h))), [2, 2])\n"
      "  return self.fc.forward(h.flatten(1))\n");
  torch::jit::Module bn1 = m.attr("bn1").toModule(), conv2 = m.attr("conv2").toModule();
  torch::jit::Module fc = m.attr("fc").toModule();
  {
    torch::NoGradGuard no_grad;
    bn1.attr("bias").toTensor()[1].fill_(-100.0);  // channel 1 never fires
    m.attr("bn2").toModule().attr("bias").toTensor()[3].fill_(-100.0);  // nor conv2's channel 3
  }
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({40, 1, 8, 8});
  const torch::Tensor before = Logits(m, x);
  const torch::Tensor conv1_before = m.attr("conv1").toModule().attr("weight").toTensor().clone();
  std::mt19937_64 rng(6);
  auto stats = RecycleDormantUnits(m, x, RecycleOptions{}, rng);
  REQUIRE(stats.ok());
  CHECK(stats->units == 9);
  CHECK(stats->recycled == 2);
  CHECK(torch::allclose(Logits(m, x), before, 0, 0));
  // conv1's channel 1: new filter, BatchNorm back to identity on fresh stats.
  CHECK(!torch::equal(m.attr("conv1").toModule().attr("weight").toTensor()[1], conv1_before[1]));
  CHECK(torch::equal(m.attr("conv1").toModule().attr("weight").toTensor()[0], conv1_before[0]));
  CHECK(bn1.attr("bias").toTensor()[1].item<float>() == 0.0f);
  CHECK(bn1.attr("weight").toTensor()[1].item<float>() == 1.0f);
  CHECK(bn1.attr("running_mean").toTensor()[1].item<float>() == 0.0f);
  CHECK(bn1.attr("running_var").toTensor()[1].item<float>() == 1.0f);
  CHECK(bn1.attr("running_mean").toTensor()[0].item<float>() == doctest::Approx(0.2));
  // Nothing reads it yet: conv2's input channel 1, and fc's block of conv2's
  // channel 3 (columns 12..15).
  CHECK(conv2.attr("weight").toTensor().narrow(0, 0, 3).select(1, 1).abs().sum().item<float>() == 0);
  CHECK(fc.attr("weight").toTensor().narrow(1, 12, 4).abs().sum().item<float>() == 0);
  CHECK(fc.attr("weight").toTensor().narrow(1, 8, 4).abs().sum().item<float>() > 0);
  // The measurement ran in eval mode and left the module's mode as it was.
  CHECK(m.is_training());
}

TEST_CASE("a unit that fires but has no outgoing weight yet is not dormant") {
  torch::jit::Module m = Mlp({6});
  {
    torch::NoGradGuard no_grad;
    Param(m, "out_weight").select(1, 4).zero_();  // as a unit recycled last round, before it learned
  }
  std::mt19937_64 rng(1);
  auto stats = RecycleDormantUnits(m, torch::rand({30, 1, 6, 6}), RecycleOptions{}, rng);
  REQUIRE(stats.ok());
  CHECK(stats->recycled == 0);
}

TEST_CASE("modules that cannot be recycled, and unusable inputs, are refused with the module as it was") {
  std::mt19937_64 rng(1);
  SUBCASE("layers declared out of forward order") {
    torch::jit::Module m("Backwards");
    m.register_module("out", UserLinear(6, 4, 1));
    m.register_module("hidden", UserLinear(36, 6, 2));
    m.define("def forward(self, x):\n  return self.out.forward(torch.relu(self.hidden.forward(x.flatten(1))))\n");
    auto refused = RecycleDormantUnits(m, torch::rand({5, 1, 6, 6}), RecycleOptions{}, rng);
    CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
    CHECK(refused.status().message().find("'hidden.weight' [6, 36] does not read the 4 units of 'out.weight'") !=
          std::string::npos);
  }
  SUBCASE("shapes that chain but a forward that uses the layers in another order") {
    // Declared a then b; forward runs b then a. Input 2 is always zero, so
    // b's column 2 gets no gradient and a's dead unit 2 looks dormant under
    // the declared order; re-drawing it would change the output, so the
    // change is undone.
    torch::jit::Module m("Swapped");
    m.register_module("a", UserLinear(6, 6, 1));
    m.register_module("b", UserLinear(6, 6, 2));
    m.register_module("out", UserLinear(6, 3, 3));
    m.define("def forward(self, x):\n  return self.out.forward(torch.relu(self.a.forward(torch.relu(self.b.forward(x)))))\n");
    torch::jit::Module a = m.attr("a").toModule();
    {
      torch::NoGradGuard no_grad;
      a.attr("weight").toTensor()[2].zero_();
      a.attr("bias").toTensor()[2].fill_(-1.0);
      // b passes its input through, so whatever is re-drawn fires on some
      // inputs and the outputs would change.
      torch::jit::Module b = m.attr("b").toModule();
      b.attr("weight").toTensor().copy_(torch::eye(6));
      b.attr("bias").toTensor().zero_();
    }
    // Inputs of both signs: a re-drawn unit of b fires on about half of them.
    torch::Tensor x = torch::rand({200, 6}) * 2 - 1;
    x.select(1, 2).zero_();
    const torch::Tensor before = Logits(m, x);
    const torch::Tensor a_before = a.attr("weight").toTensor().clone();
    auto refused = RecycleDormantUnits(m, x, RecycleOptions{}, rng);
    CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
    CHECK(refused.status().message().find("would change the module's outputs") != std::string::npos);
    CHECK(torch::equal(a.attr("weight").toTensor(), a_before));
    CHECK(torch::equal(Logits(m, x), before));
  }
  SUBCASE("a parameter that is neither linear nor conv2d") {
    torch::jit::Module m("Embed");
    m.register_parameter("table_weight", torch::rand({4, 3, 2}), false);
    m.register_parameter("out_weight", torch::rand({2, 3}), false);
    m.define("def forward(self, x):\n  return torch.linear(x, self.out_weight)\n");
    auto refused = RecycleDormantUnits(m, torch::rand({5, 3}), RecycleOptions{}, rng);
    CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
    CHECK(refused.status().message() ==
          "parameter 'table_weight' of shape [4, 3, 2] is neither a linear nor a 2-d convolution weight");
  }
  SUBCASE("bad inputs and options") {
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
}

}  // namespace
}  // namespace distilld::learner
