// QAT twin and int8 serving module: shared parameters, rounding that really
// happens, int8 outputs close to float, a smaller file that reloads (in C++
// and Python), and QAT beating plain fine-tuning under 4-bit weights.
#include "tests/learner/torch_doctest.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "learner/compress_train.h"
#include "learner/evaluate.h"
#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/offline.h"
#include "learner/quantize.h"
#include "learner/train_step.h"
#include "tests/learner/compress_test_data.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

double Accuracy(torch::jit::Module& m, const Dataset& d) {
  auto r = EvaluateTensors(m, d.images, d.labels, torch::Tensor());
  REQUIRE(r.ok());
  return r->accuracy();
}

TEST_CASE("the QAT twin shares the student's parameters and rounds for real") {
  for (ArchSpec spec : {ArchSpec{"mlp", {1, 8, 8}, 4, {32}, {}}, ArchSpec{"cnn", {1, 8, 8}, 4, {16}, {6, 8}}}) {
    CAPTURE(spec.kind);
    auto student = BuildModel(spec, 4);
    REQUIRE(student.ok());
    torch::Tensor x = testdata::Quadrants(16, 3).images;
    QatOptions off;
    off.quantize_activations = false;
    auto twin8 = MakeQatModule(*student, spec);
    auto twin4 = MakeQatModule(*student, spec, QatOptions{4, true, true});
    REQUIRE(twin8.ok());
    REQUIRE(twin4.ok());
    torch::Tensor f, q8, q4;
    {
      torch::NoGradGuard g;
      f = student->forward({x}).toTensor();
      q8 = twin8->forward({x}).toTensor();
      q4 = twin4->forward({x}).toTensor();
    }
    const double range = f.abs().max().item<double>();
    const double e8 = (q8 - f).abs().max().item<double>();
    const double e4 = (q4 - f).abs().max().item<double>();
    CHECK(e8 > 0.0);            // rounding happens
    CHECK(e8 < 0.05 * range);   // ... but 8-bit is close
    CHECK(e4 > e8);             // 4-bit rounds coarser
    // Gradients through the twin land on the student's own tensors.
    twin8->train();
    torch::Tensor loss = twin8->forward({x}).toTensor().pow(2).mean();
    loss.backward();
    torch::Tensor w = student->attr("out_weight").toTensor();
    REQUIRE(w.grad().defined());
    CHECK(w.grad().abs().sum().item<double>() > 0.0);
    // A change to the student shows in the twin.
    {
      torch::NoGradGuard g;
      w.mul_(2.0);
      CHECK_FALSE(torch::allclose(twin8->forward({x}).toTensor(), q8));
    }
  }
  auto m = BuildModel({"mlp", {1, 8, 8}, 4, {8}, {}}, 1);
  CHECK(MakeQatModule(*m, {"mlp", {1, 8, 8}, 4, {8}, {}}, QatOptions{3, true, false}).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(MakeQatModule(*m, {"mlp", {1, 8, 8}, 4, {9}, {}}).status().code() == StatusCode::kInvalidArgument);
}

// The QNNPACK back end: the one whose files Python can load (a native int8
// module needs distilld's operators; compress_int8_native_test covers it).
TEST_CASE("qnnpack int8 module: close to float, smaller on disk, reloads in C++ and Python") {
  auto engine = UseQuantizedEngine();
  REQUIRE(engine.ok());
  MESSAGE("quantized engine: " << *engine);
  testing::TempDir dir;
  for (ArchSpec spec : {ArchSpec{"mlp", {1, 28, 28}, 10, {64, 32}, {}},
                        ArchSpec{"cnn", {1, 28, 28}, 10, {64}, {4, 8}}}) {
    CAPTURE(spec.kind);
    auto fm = BuildModel(spec, 8);
    REQUIRE(fm.ok());
    Int8Options qnnpack;
    qnnpack.kernels = "qnnpack";
    auto qm = QuantizeDynamicInt8(*fm, spec, qnnpack);
    REQUIRE(qm.ok());
    CHECK(CountModelWeights(*qm) == CountParameters(*fm));
    CHECK(CountParameters(*qm) < CountParameters(*fm));  // linear weights are packed, not parameters
    at::Generator gen = at::detail::createCPUGenerator(7);
    torch::Tensor x = torch::rand({64, 1, 28, 28}, gen);
    torch::Tensor f, q, qf;
    {
      torch::NoGradGuard g;
      f = fm->forward({x}).toTensor();
      q = qm->forward({x}).toTensor();
      qf = qm->get_method("features")({x}).toTensor();
    }
    CHECK(qf.size(1) == spec.hidden.back());
    const double range = f.abs().max().item<double>();
    CHECK((q - f).abs().max().item<double>() < 0.05 * range);
    CHECK(q.argmax(1).eq(f.argmax(1)).to(torch::kFloat32).mean().item<double>() >= 0.9);

    auto fs = SaveModelAtomic(*fm, dir.str(spec.kind + "_f32.pt"));
    auto qs = SaveModelAtomic(*qm, dir.str(spec.kind + "_int8.pt"));
    REQUIRE(fs.ok());
    REQUIRE(qs.ok());
    MESSAGE(spec.kind << " file bytes float " << fs->size_bytes << " int8 " << qs->size_bytes);
    CHECK(qs->size_bytes * 2 < fs->size_bytes);
    auto back = LoadModel(qs->path, qs->sha256);
    REQUIRE(back.ok());
    {
      torch::NoGradGuard g;
      CHECK(torch::allclose(back->forward({x}).toTensor(), q, 1e-6, 1e-6));
    }

    // Python's torch.jit.load (Debian python3-torch) gives the same logits.
    if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
      MESSAGE("python3-torch missing: Python load of the int8 module not checked");
      continue;
    }
    std::string xin = dir.str(spec.kind + ".x"), yin = dir.str(spec.kind + ".y");
    torch::Tensor xc = x.contiguous(), qc = q.contiguous();
    std::ofstream(xin, std::ios::binary).write(reinterpret_cast<const char*>(xc.data_ptr<float>()), xc.nbytes());
    std::ofstream(yin, std::ios::binary).write(reinterpret_cast<const char*>(qc.data_ptr<float>()), qc.nbytes());
    const std::string script =
        "import sys, torch\n"
        "torch.backends.quantized.engine = sys.argv[4]\n"
        "m = torch.jit.load(sys.argv[1])\n"
        "x = torch.frombuffer(bytearray(open(sys.argv[2], 'rb').read()), dtype=torch.float32).reshape(64, 1, 28, 28)\n"
        "y = torch.frombuffer(bytearray(open(sys.argv[3], 'rb').read()), dtype=torch.float32).reshape(64, 10)\n"
        "print('maxdiff %.9f' % (m(x) - y).abs().max().item())\n";
    std::ofstream(dir.str("load.py")) << script;
    const testing::ProcessResult run = testing::RunCommand("/usr/bin/python3 " + dir.str("load.py") + " " + qs->path +
                                                           " " + xin + " " + yin + " " + *engine);
    const std::string& out = run.output;
    CAPTURE(out);
    REQUIRE(run.exit_code == 0);
    auto pos = out.find("maxdiff ");
    REQUIRE(pos != std::string::npos);
    CHECK(std::stod(out.substr(pos + 8)) < 1e-5);
  }
}

TEST_CASE("the QAT twin computes what the int8 module computes (fake-quant round trip)") {
  REQUIRE(UseQuantizedEngine().ok());
  for (std::string kernels : {"native", "qnnpack"}) {
    for (int bits : {8, 4}) {
      for (ArchSpec spec : {ArchSpec{"mlp", {1, 8, 8}, 4, {32, 16}, {}}, ArchSpec{"cnn", {1, 8, 8}, 4, {16}, {6, 8}}}) {
        CAPTURE(kernels);
        CAPTURE(bits);
        CAPTURE(spec.kind);
        auto fm = BuildModel(spec, 31);
        REQUIRE(fm.ok());
        QatOptions qo;
        qo.weight_bits = bits;
        qo.quantize_conv = kernels == "native";  // QNNPACK keeps convolutions in float
        auto twin = MakeQatModule(*fm, spec, qo);
        Int8Options io;
        io.weight_bits = bits;
        io.kernels = kernels;
        auto qm = QuantizeDynamicInt8(*fm, spec, io);
        REQUIRE(twin.ok());
        REQUIRE(qm.ok());
        torch::Tensor x = testdata::Quadrants(32, 13).images;
        torch::NoGradGuard g;
        twin->eval();
        torch::Tensor f = fm->forward({x}).toTensor();
        torch::Tensor t = twin->forward({x}).toTensor();
        torch::Tensor q = qm->forward({x}).toTensor();
        const double twin_err = (t - q).abs().max().item<double>();
        const double float_err = (f - q).abs().max().item<double>();
        MESSAGE("max |twin - int8| " << twin_err << ", max |float - int8| " << float_err);
        CHECK(float_err > 0.0);
        CHECK(twin_err < 1e-4);
        CHECK(twin_err * 20 < float_err);
      }
    }
  }
}

TEST_CASE("4-bit weights: QAT fine-tuning beats plain fine-tuning once quantized") {
  REQUIRE(UseQuantizedEngine().ok());
  // A weak signal, so accuracy is below 1 and weight rounding can cost some.
  Dataset train = testdata::Quadrants(1500, 11, 0.6, 0.08);
  Dataset test = testdata::Quadrants(1000, 12, 0.6, 0.08);
  ArchSpec spec = {"mlp", {1, 8, 8}, 4, {16}, {}};
  auto base = BuildModel(spec, 21);
  REQUIRE(base.ok());
  internal::KdRunOptions run;
  run.steps = 400;
  run.loss.alpha = 1.0;
  REQUIRE(internal::RunKdSteps(*base, train, torch::Tensor(), run).ok());

  // Same extra steps, same data order: once plain float, once through QAT.
  QatTrainOptions qo;
  qo.qat.weight_bits = 4;
  qo.train = train;
  qo.steps = 300;
  qo.loss.alpha = 1.0;
  qo.threads = 1;
  torch::jit::Module plain = CloneForTraining(*base).value();
  internal::KdRunOptions same;
  same.steps = qo.steps;
  same.learning_rate = qo.learning_rate;
  same.loss = qo.loss;
  same.seed = qo.seed;
  REQUIRE(internal::RunKdSteps(plain, train, torch::Tensor(), same).ok());
  torch::jit::Module qat = CloneForTraining(*base).value();
  REQUIRE(QatFineTune(qat, spec, qo).ok());

  Int8Options i4;
  i4.weight_bits = 4;
  auto plain_q = QuantizeDynamicInt8(plain, spec, i4);
  auto qat_q = QuantizeDynamicInt8(qat, spec, i4);
  REQUIRE(plain_q.ok());
  REQUIRE(qat_q.ok());
  const double float_acc = Accuracy(plain, test);
  const double plain_acc = Accuracy(*plain_q, test);
  const double qat_acc = Accuracy(*qat_q, test);
  MESSAGE("float " << float_acc << ", plain->int4 " << plain_acc << ", QAT->int4 " << qat_acc);
  CHECK(qat_acc >= plain_acc);
  CHECK(float_acc < 0.99);  // the task is not saturated
  CHECK(qat_acc > 0.6);
}

}  // namespace
}  // namespace distilld::learner
