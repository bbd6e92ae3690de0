// Native int8 kernels (learner/model/int8_kernels.h) and the native int8 module:
// kernels against a double-precision reference computed from the very same
// quantized values, scalar and AVX2 paths bit-identical, odd shapes, the
// module against the float student and its QAT twin, save/load (also in a
// fresh process, where only LoadModel registers the operators) and errors.
#include "tests/learner/torch_doctest.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "learner/model/arch.h"
#include "learner/model/int8_kernels.h"
#include "learner/model/model_io.h"
#include "learner/model/optimize.h"
#include "learner/quantize.h"
#include "tests/learner/compress_test_data.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

// Restores the automatic path choice when a test case ends.
struct PathGuard {
  ~PathGuard() { (void)SetInt8KernelPath(Int8KernelPath::kAuto); }
};

// x dequantized exactly as the kernels quantize it (per tensor, uint8 over
// [min(x,0), max(x,0)]), computed independently with LibTorch's fake-quant.
torch::Tensor FakeQuantInput(const torch::Tensor& x) {
  const double lo = std::min(x.min().item<double>(), 0.0), hi = std::max(x.max().item<double>(), 0.0);
  const double scale = (hi - lo) / 255.0;
  if (!(scale > 0.0)) return x.clone();
  const int64_t zp = static_cast<int64_t>(std::nearbyint(-lo / scale));
  return torch::fake_quantize_per_tensor_affine(x, scale, zp, 0, 255);
}

torch::Tensor Dequant(const torch::Tensor& q, const torch::Tensor& scale) {
  std::vector<int64_t> view(q.dim(), 1);
  view[0] = q.size(0);
  return q.to(torch::kDouble) * scale.to(torch::kDouble).view(view);
}

// max |got - want| / (1 + |want|) elementwise.
double RelErr(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got.to(torch::kDouble) - want).abs() / (want.abs() + 1.0)).max().item<double>();
}

torch::Tensor Input(std::vector<int64_t> shape, const std::string& kind, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  torch::Tensor x = torch::randn(shape, gen);
  if (kind == "zero") return torch::zeros(shape);
  if (kind == "negative") return -x.abs() - 0.1;
  if (kind == "positive") return x.abs();
  return x;  // mixed signs
}

std::vector<Int8KernelPath> Paths() {
  std::vector<Int8KernelPath> paths = {Int8KernelPath::kScalar};
  for (Int8KernelPath p : {Int8KernelPath::kAvx2, Int8KernelPath::kVnni}) {
    if (SetInt8KernelPath(p).ok()) paths.push_back(p);
  }
  (void)SetInt8KernelPath(Int8KernelPath::kAuto);
  return paths;
}

TEST_CASE("linear_int8 equals a float reference on the same quantized values, on every path") {
  PathGuard guard;
  MESSAGE("auto path: " << Int8KernelPathName(ActiveInt8KernelPath()));
  torch::NoGradGuard no_grad;
  for (int64_t batch : {1, 7}) {
    for (int64_t k : {1, 5, 17, 33, 100, 784}) {
      for (int64_t n : {1, 3, 5, 10, 51}) {
        for (const char* kind : {"mixed", "negative", "positive", "zero"}) {
          for (bool relu : {false, true}) {
            CAPTURE(batch);
            CAPTURE(k);
            CAPTURE(n);
            CAPTURE(kind);
            CAPTURE(relu);
            torch::Tensor x = Input({batch, k}, kind, 100 + k * n);
            at::Generator gen = at::detail::createCPUGenerator(k + n);
            torch::Tensor wf = torch::randn({n, k}, gen) * 0.3;
            torch::Tensor bias = torch::randn({n}, gen);
            auto [wq, ws] = QuantizeWeightSymmetric(wf, 8);
            torch::Tensor want = torch::linear(FakeQuantInput(x).to(torch::kDouble), Dequant(wq, ws),
                                               bias.to(torch::kDouble));
            if (relu) want = torch::relu(want);
            torch::Tensor first;
            for (Int8KernelPath path : Paths()) {
              CAPTURE(Int8KernelPathName(path));
              REQUIRE(SetInt8KernelPath(path).ok());
              torch::Tensor got = LinearInt8(x, wq, ws, bias, relu);
              REQUIRE(got.sizes() == torch::IntArrayRef({batch, n}));
              CHECK(RelErr(got, want) < 1e-5);
              if (!first.defined()) {
                first = got;
              } else {
                CHECK(torch::equal(got, first));  // scalar, AVX2 and VNNI: bit-identical
              }
            }
            if (std::string(kind) == "zero") CHECK(torch::equal(first, relu ? torch::relu(bias).expand({batch, n})
                                                                              : bias.expand({batch, n})));
          }
        }
      }
    }
  }
}

TEST_CASE("conv3x3_relu_pool_int8 equals conv + relu + max-pool on the same quantized values") {
  PathGuard guard;
  torch::NoGradGuard no_grad;
  struct Shape {
    int64_t c, h, w, n;
  };
  for (int64_t batch : {1, 7}) {
    for (Shape s : {Shape{1, 28, 28, 4}, Shape{1, 8, 8, 1}, Shape{3, 7, 9, 5}, Shape{5, 14, 14, 9},
                    Shape{8, 14, 14, 16}, Shape{2, 5, 3, 3}, Shape{4, 2, 2, 6}}) {
      for (const char* kind : {"mixed", "negative", "positive", "zero"}) {
        CAPTURE(batch);
        CAPTURE(s.c);
        CAPTURE(s.h);
        CAPTURE(s.w);
        CAPTURE(s.n);
        CAPTURE(kind);
        torch::Tensor x = Input({batch, s.c, s.h, s.w}, kind, 7 + s.c * s.h);
        at::Generator gen = at::detail::createCPUGenerator(s.n * 31 + s.c);
        torch::Tensor wf = torch::randn({s.n, s.c, 3, 3}, gen) * 0.3;
        torch::Tensor bias = torch::randn({s.n}, gen) * 0.5;
        auto [wq, ws] = QuantizeWeightSymmetric(wf, 8);
        torch::Tensor want = torch::max_pool2d(
            torch::relu(torch::conv2d(FakeQuantInput(x).to(torch::kDouble), Dequant(wq, ws), bias.to(torch::kDouble),
                                      1, 1)),
            2);
        torch::Tensor first;
        for (Int8KernelPath path : Paths()) {
          CAPTURE(Int8KernelPathName(path));
          REQUIRE(SetInt8KernelPath(path).ok());
          torch::Tensor got = Conv3x3ReluPoolInt8(x, wq, ws, bias);
          REQUIRE(got.sizes() == want.sizes());
          CHECK(RelErr(got, want) < 1e-5);
          if (!first.defined()) {
            first = got;
          } else {
            CHECK(torch::equal(got, first));
          }
        }
      }
    }
  }
}

TEST_CASE("4-bit weights stay on the [-7, 7] grid and non-contiguous inputs work") {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(3);
  torch::Tensor wf = torch::randn({6, 20}, gen);
  auto [wq, ws] = QuantizeWeightSymmetric(wf, 4);
  CHECK(wq.abs().max().item<int>() == 7);
  CHECK(RelErr(ws, wf.abs().amax(1).to(torch::kDouble) / 7.0) < 1e-6);
  torch::Tensor x = torch::randn({20, 3}, gen).t();  // [3, 20], not contiguous
  torch::Tensor want = torch::linear(FakeQuantInput(x).to(torch::kDouble), Dequant(wq, ws));
  CHECK(RelErr(LinearInt8(x, wq, ws, torch::zeros({6}), false), want) < 1e-5);
}

TEST_CASE("bad arguments give a clear error; QuantizeDynamicInt8 returns a Status") {
  RegisterNativeInt8Ops();
  torch::Tensor x = torch::rand({2, 8});
  auto [wq, ws] = QuantizeWeightSymmetric(torch::randn({4, 8}), 8);
  torch::Tensor b = torch::zeros({4});
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "";
  };
  CHECK(message([&] { LinearInt8(x, wq.to(torch::kFloat), ws, b, false); }).find("w_int8 must be int8") !=
        std::string::npos);
  CHECK(message([&] { LinearInt8(torch::rand({2, 9}), wq, ws, b, false); }).find("expects 8") != std::string::npos);
  CHECK(message([&] { LinearInt8(x, wq, ws, torch::zeros({3}), false); }).find("bias must be") != std::string::npos);
  CHECK(message([&] { LinearInt8(x.to(torch::kDouble), wq, ws, b, false); }).find("float32") != std::string::npos);
  auto [cq, cs] = QuantizeWeightSymmetric(torch::randn({4, 2, 5, 5}), 8);
  CHECK(message([&] { Conv3x3ReluPoolInt8(torch::rand({1, 2, 8, 8}), cq, cs, b); }).find("[out, in, 3, 3]") !=
        std::string::npos);
  auto [pq, ps] = QuantizeWeightSymmetric(torch::randn({4, 2, 3, 3}), 8);
  CHECK(message([&] { Conv3x3ReluPoolInt8(torch::rand({1, 2, 8, 8}), pq, -ps, b); }).find("positive") !=
        std::string::npos);
  // Through the dispatcher (what TorchScript calls): the same c10::Error.
  const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("distilld::linear_int8", "");
  std::vector<c10::IValue> stack{torch::rand({2, 7}), wq, ws, b, false};
  CHECK(message([&] { op.callBoxed(&stack); }).find("x has 7 features") != std::string::npos);

  ArchSpec spec{"mlp", {1, 8, 8}, 4, {8}, {}};
  auto m = BuildModel(spec, 1);
  REQUIRE(m.ok());
  Int8Options bogus;
  bogus.kernels = "fbgemm";
  CHECK(QuantizeDynamicInt8(*m, spec, bogus).status().code() == StatusCode::kInvalidArgument);
  CHECK(QuantizeDynamicInt8(*m, {"mlp", {1, 8, 8}, 4, {9}, {}}).status().code() == StatusCode::kInvalidArgument);
  Int8Options bits;
  bits.weight_bits = 5;
  CHECK(QuantizeDynamicInt8(*m, spec, bits).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("native int8 module: close to float, equal to its QAT twin, counts its weights") {
  for (int bits : {8, 4}) {
    for (ArchSpec spec : {ArchSpec{"mlp", {1, 28, 28}, 10, {51}, {}}, ArchSpec{"mlp", {1, 8, 8}, 4, {33, 17}, {}},
                          ArchSpec{"cnn", {1, 28, 28}, 10, {9}, {4, 9}}, ArchSpec{"cnn", {1, 8, 8}, 4, {16}, {6, 8}}}) {
      CAPTURE(bits);
      CAPTURE(spec.kind);
      CAPTURE(spec.input_shape[1]);
      auto fm = BuildModel(spec, 8);
      REQUIRE(fm.ok());
      Int8Options io;
      io.weight_bits = bits;
      auto qm = QuantizeDynamicInt8(*fm, spec, io);
      REQUIRE(qm.ok());
      CHECK(CountModelWeights(*qm) == CountParameters(*fm));
      QatOptions qo;
      qo.weight_bits = bits;
      auto twin = MakeQatModule(*fm, spec, qo);
      REQUIRE(twin.ok());
      twin->eval();
      at::Generator gen = at::detail::createCPUGenerator(9);
      std::vector<int64_t> shape = {7};
      shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
      torch::Tensor x = torch::rand(shape, gen);
      torch::NoGradGuard g;
      torch::Tensor f = fm->forward({x}).toTensor();
      torch::Tensor q = qm->forward({x}).toTensor();
      torch::Tensor t = twin->forward({x}).toTensor();
      const double range = f.abs().max().item<double>();
      const double float_err = (q - f).abs().max().item<double>();
      const double twin_err = (q - t).abs().max().item<double>();
      MESSAGE("max |float - int8| " << float_err << ", max |twin - int8| " << twin_err);
      if (bits == 8) CHECK(float_err < 0.05 * range);
      CHECK(float_err > 0.0);
      CHECK(twin_err < 1e-4);
      CHECK(twin_err * 20 < float_err);
      CHECK(qm->get_method("features")({x}).toTensor().size(1) == spec.hidden.back());
      // Batch 1 quantizes one sample's range; still close to the float output.
      torch::Tensor q1 = qm->forward({x.slice(0, 0, 1)}).toTensor();
      if (bits == 8) CHECK((q1 - f.slice(0, 0, 1)).abs().max().item<double>() < 0.05 * range);
    }
  }
}

// Runs alone in a child process (see the next test case): the operators are
// registered only by LoadModel there, as in a daemon that loads a saved
// native int8 student.
TEST_CASE("fresh process: LoadModel registers the native operators") {
  const char* path = std::getenv("DISTILLD_INT8_FRESH_MODEL");
  if (path == nullptr) return;  // only meaningful in the child
  auto m = LoadModel(path);
  REQUIRE(m.ok());
  torch::NoGradGuard g;
  torch::Tensor y = m->forward({torch::full({1, 1, 28, 28}, 0.5)}).toTensor();
  std::printf("fresh-load logits0 %.9f\n", y[0][0].item<double>());
}

TEST_CASE("native int8 module: save, LoadModel, optimize and a fresh process give the same outputs") {
  testing::TempDir dir;
  for (ArchSpec spec : {ArchSpec{"mlp", {1, 28, 28}, 10, {51}, {}}, ArchSpec{"cnn", {1, 28, 28}, 10, {9}, {4, 9}}}) {
    CAPTURE(spec.kind);
    auto fm = BuildModel(spec, 5);
    REQUIRE(fm.ok());
    auto qm = QuantizeDynamicInt8(*fm, spec);
    REQUIRE(qm.ok());
    auto saved = SaveModelAtomic(*qm, dir.str(spec.kind + "_native.pt"));
    auto fsaved = SaveModelAtomic(*fm, dir.str(spec.kind + "_float.pt"));
    REQUIRE(saved.ok());
    REQUIRE(fsaved.ok());
    MESSAGE(spec.kind << " file bytes float " << fsaved->size_bytes << " native int8 " << saved->size_bytes);
    CHECK(saved->size_bytes * 2 < fsaved->size_bytes);
    auto back = LoadModel(saved->path, saved->sha256);
    REQUIRE(back.ok());
    auto served = OptimizeForServing(*back);
    REQUIRE(served.ok());
    torch::Tensor x = torch::rand({7, 1, 28, 28});
    torch::NoGradGuard g;
    torch::Tensor want = qm->forward({x}).toTensor();
    CHECK(torch::equal(back->forward({x}).toTensor(), want));
    CHECK(torch::equal(served->forward({x}).toTensor(), want));
    CHECK(torch::equal(served->get_method("features")({x}).toTensor(), qm->get_method("features")({x}).toTensor()));

    const double want0 = qm->forward({torch::full({1, 1, 28, 28}, 0.5)}).toTensor()[0][0].item<double>();
    char exe[4096];
    const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    REQUIRE(len > 0);
    exe[len] = '\0';
    const testing::ProcessResult run =
        testing::RunCommand("DISTILLD_INT8_FRESH_MODEL=" + saved->path + " " + exe + " --test-case='fresh process*'");
    const std::string& out = run.output;
    CAPTURE(out);
    REQUIRE(run.exit_code == 0);
    auto pos = out.find("fresh-load logits0 ");
    REQUIRE(pos != std::string::npos);
    CHECK(std::stod(out.substr(pos + 19)) == doctest::Approx(want0).epsilon(1e-6));
  }
}

}  // namespace
}  // namespace distilld::learner
