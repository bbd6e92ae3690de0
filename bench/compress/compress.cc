// Benchmark: compression of the MLP and CNN students on Fashion-MNIST.
//
// One run: trains (or reuses) a teacher with TrainTeacher, distills each
// student with DistillOffline, then builds these variants per student:
//   float                 the distilled student, frozen + optimize_for_inference
//                         (OptimizeForServing's default, what the daemon serves)
//   float frozen          the same student, frozen only (faster at batch 1
//                         for these small models: no MKLDNN layout conversions)
//   pruned / pruned frozen  PruneWithRecovery (gradual, KD recovery from the
//                         teacher), served both ways
//   int8                  QuantizeDynamicInt8 of the float student with the
//                         native kernels (learner/model/int8_kernels.h)
//   pruned+int8           the pruned student after QAT fine-tuning, then native int8
//   pruned+int8 noQAT     the pruned student converted without QAT
//   int8 qnnpack / pruned+int8 qnnpack  the same with kernels = "qnnpack"
//                         (QAT without conv rounding: QNNPACK keeps convs float)
// For each: file bytes, weight count, batch-1 and batch-64 forward latency
// and test accuracy. Speed ratios are against the FASTER of the two float
// rows at each batch size (an honest baseline: the daemon's default float
// path is not the fastest float path at batch 1). Every variant except the
// "frozen" rows is timed and evaluated as the daemon serves it: after
// OptimizeForServing (freeze + optimize_for_inference). Latencies are
// medians over rounds that interleave the variants, so machine noise hits
// all of them alike.
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <vector>

#include "learner/evaluate.h"
#include "learner/idx_dataset.h"
#include "learner/model/arch.h"
#include "learner/model/int8_kernels.h"
#include "learner/model/model_io.h"
#include "learner/model/optimize.h"
#include "learner/offline.h"
#include "learner/prune.h"
#include "learner/quantize.h"
#include "learner/train_step.h"

using namespace distilld;
using namespace distilld::learner;

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename T>
T Must(Result<T> r, const char* what) {
  if (!r.ok()) {
    std::cerr << what << ": " << r.status().ToString() << std::endl;
    std::exit(1);
  }
  return std::move(r).value();
}

ProgressCallback LineProgress(double start) {
  return [start](const ProgressEvent& e) {
    if (e.total < 5 || e.step % (e.total / 5) != 0) return;
    std::printf("  %s %lld/%lld loss %.4f (%.0f s)\n", e.stage.c_str(), static_cast<long long>(e.step),
                static_cast<long long>(e.total), e.loss, Now() - start);
    std::fflush(stdout);
  };
}

struct Variant {
  std::string name;
  torch::jit::Module served;  // after OptimizeForServing
  int64_t weights = 0;
  int64_t bytes = 0;
  double accuracy = 0;
  std::vector<double> lat1, lat64;  // seconds per forward, all rounds
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Per-call latency of `iters` forwards of x (one sample per round).
double TimeForward(torch::jit::Module& m, const torch::Tensor& x, int iters) {
  torch::NoGradGuard g;
  std::vector<torch::jit::IValue> in{x};
  double t0 = Now();
  for (int i = 0; i < iters; ++i) m.forward(in);
  return (Now() - t0) / iters;
}

void AddVariant(std::vector<Variant>& out, const std::string& name, const torch::jit::Module& m,
                const std::string& path, const Dataset& test, bool optimize_for_inference = true) {
  Variant v;
  v.name = name;
  SavedModel saved = Must(SaveModelAtomic(m, path), "save");
  v.bytes = saved.size_bytes;
  v.weights = CountModelWeights(m);
  // Reload so the measured module is what a server would load from disk.
  torch::jit::Module loaded = Must(LoadModel(path, saved.sha256), "load");
  OptimizeOptions oo;
  oo.optimize_for_inference = optimize_for_inference;
  v.served = Must(OptimizeForServing(loaded, oo), "optimize");
  v.accuracy = Must(EvaluateTensors(v.served, test.images, test.labels, torch::Tensor()), "eval").accuracy();
  out.push_back(std::move(v));
}

void Report(const std::string& student, std::vector<Variant>& vs, const Dataset& test, int rounds, int iters1,
            int iters64) {
  torch::Tensor x1 = test.images.slice(0, 0, 1).contiguous();
  torch::Tensor x64 = test.images.slice(0, 0, 64).contiguous();
  for (auto& v : vs) {  // warm-up (first calls run the profiling executor)
    TimeForward(v.served, x1, 20);
    TimeForward(v.served, x64, 5);
  }
  for (int r = 0; r < rounds; ++r) {
    for (auto& v : vs) {
      v.lat1.push_back(TimeForward(v.served, x1, iters1));
      v.lat64.push_back(TimeForward(v.served, x64, iters64));
    }
  }
  // Baseline: the faster float row at each batch size (names start "float").
  const Variant* best1 = nullptr;
  const Variant* best64 = nullptr;
  for (const auto& v : vs) {
    if (v.name.rfind("float", 0) != 0) continue;
    if (best1 == nullptr || Median(v.lat1) < Median(best1->lat1)) best1 = &v;
    if (best64 == nullptr || Median(v.lat64) < Median(best64->lat64)) best64 = &v;
  }
  const Variant& f = vs.front();
  const double f1 = Median(best1->lat1), f64 = Median(best64->lat64);
  std::printf("\n%s student (test set %lld images; latency: median of %d rounds, 1 intra-op thread, int8 kernel path %s)\n",
              student.c_str(), static_cast<long long>(test.size()), rounds,
              Int8KernelPathName(ActiveInt8KernelPath()).c_str());
  std::printf("speed ratios against the faster float row: batch 1 '%s' (%.1f us), batch 64 '%s' (%.1f us); "
              "size and accuracy against '%s'\n",
              best1->name.c_str(), f1 * 1e6, best64->name.c_str(), f64 * 1e6, f.name.c_str());
  std::printf("| variant | file bytes | weights | batch-1 us | batch-64 us | test acc | size x | speed-1 x | speed-64 x | acc %% of float |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& v : vs) {
    const double l1 = Median(v.lat1), l64 = Median(v.lat64);
    std::printf("| %s | %lld | %lld | %.1f | %.1f | %.4f | %.2f | %.2f | %.2f | %.2f |\n", v.name.c_str(),
                static_cast<long long>(v.bytes), static_cast<long long>(v.weights), l1 * 1e6, l64 * 1e6,
                v.accuracy, static_cast<double>(f.bytes) / static_cast<double>(v.bytes), f1 / l1, f64 / l64,
                100.0 * v.accuracy / f.accuracy);
  }
  for (const auto& v : vs) {
    if (v.name != "pruned+int8") continue;
    const double speed = f1 / Median(v.lat1);
    std::printf("target (pruned+int8 >= 2x the best float at batch 1, >= 3x smaller, >= 99%% accuracy): "
                "%.2fx -> %s, %.2fx smaller, %.2f%%\n",
                speed, speed >= 2.0 ? "met" : "NOT met", static_cast<double>(f.bytes) / static_cast<double>(v.bytes),
                100.0 * v.accuracy / f.accuracy);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("compression benchmark: float / pruned / int8 / pruned+int8 students (native and QNNPACK int8)");
  std::string data_dir = kDefaultFashionMnistDir, teacher_path, out_dir = "bench_compress_out";
  int threads = 2, teacher_epochs = 2, rounds = 7, iters1 = 200, iters64 = 20;
  int64_t train_limit = 20000, holdout = 2000, test_limit = 0, recovery_steps = 600, qat_steps = 400;
  double prune_fraction = 0.6;
  int prune_steps = 3;
  std::string students = "mlp,cnn";
  std::string int8_path = "auto";
  app.add_option("--data-dir", data_dir);
  app.add_option("--teacher", teacher_path, "teacher .pt to reuse; default: train one into --out-dir");
  app.add_option("--out-dir", out_dir);
  app.add_option("--threads", threads, "training threads");
  app.add_option("--teacher-epochs", teacher_epochs);
  app.add_option("--train-limit", train_limit, "first N training images train teacher and students");
  app.add_option("--holdout", holdout, "the next N training images score units for pruning");
  app.add_option("--test-limit", test_limit, "first N test images (0 = all 10000)");
  app.add_option("--prune-fraction", prune_fraction, "fraction of parameters (MLP) / MACs (CNN) to remove");
  app.add_option("--prune-steps", prune_steps);
  app.add_option("--recovery-steps", recovery_steps, "KD steps after each pruning step");
  app.add_option("--qat-steps", qat_steps);
  app.add_option("--rounds", rounds);
  app.add_option("--students", students);
  app.add_option("--int8-path", int8_path, "native int8 code path: auto, scalar, avx2, avx512vnni");
  CLI11_PARSE(app, argc, argv);
  {
    const std::map<std::string, Int8KernelPath> paths = {{"auto", Int8KernelPath::kAuto},
                                                         {"scalar", Int8KernelPath::kScalar},
                                                         {"avx2", Int8KernelPath::kAvx2},
                                                         {"avx512vnni", Int8KernelPath::kVnni}};
    auto it = paths.find(int8_path);
    if (it == paths.end()) {
      std::cerr << "--int8-path: unknown path " << int8_path << std::endl;
      return 2;
    }
    if (Status s = SetInt8KernelPath(it->second); !s.ok()) {
      std::cerr << "--int8-path " << int8_path << ": " << s.ToString() << std::endl;
      return 2;
    }
  }

  const double start = Now();
  std::filesystem::create_directories(out_dir);
  std::string engine = Must(UseQuantizedEngine(), "quantized engine");
  std::printf("quantized engine %s, training threads %d, train %lld + holdout %lld images\n", engine.c_str(),
              threads, static_cast<long long>(train_limit), static_cast<long long>(holdout));

  if (teacher_path.empty()) {
    TrainTeacherOptions t;
    t.data_dir = data_dir;
    t.output_path = out_dir + "/teacher.pt";
    t.epochs = teacher_epochs;
    t.threads = threads;
    t.train_limit = train_limit;
    t.test_limit = test_limit;
    t.progress = LineProgress(start);
    TrainReport r = Must(TrainTeacher(t), "train teacher");
    std::printf("teacher: %lld params, test accuracy %.4f (%.0f s)\n", static_cast<long long>(r.params),
                r.test_accuracy, r.seconds);
    teacher_path = t.output_path;
  }
  torch::jit::Module teacher = Must(LoadModel(teacher_path), "load teacher");
  Dataset all_train = Must(LoadIdxDataset(data_dir, "train", train_limit + holdout), "train set");
  Dataset train{all_train.images.slice(0, 0, train_limit), all_train.labels.slice(0, 0, train_limit)};
  Dataset held{all_train.images.slice(0, train_limit), all_train.labels.slice(0, train_limit)};
  Dataset test = Must(LoadIdxDataset(data_dir, "t10k", test_limit), "test set");

  std::map<std::string, ArchSpec> specs = {
      {"mlp", {"mlp", {1, 28, 28}, 10, {128}, {}}},
      {"cnn", {"cnn", {1, 28, 28}, 10, {16}, {8, 16}}},  // DistillOptions' default student
  };
  std::stringstream list(students);
  for (std::string kind; std::getline(list, kind, ',');) {
    at::set_num_threads(threads);
    const ArchSpec spec = specs.at(kind);
    const std::string base = out_dir + "/" + kind;
    DistillOptions d;
    d.teacher_path = teacher_path;
    d.student_arch = spec;
    d.output_path = base + "_float.pt";
    d.data_dir = data_dir;
    d.train_limit = train_limit;
    d.test_limit = test_limit;
    d.stage1_epochs = 2;
    d.stage2_epochs = 1;
    d.stage3_epochs = 1;
    d.threads = threads;
    d.progress = LineProgress(start);
    DistillReport dr = Must(DistillOffline(d), "distill");
    std::printf("%s student distilled: %lld params, test accuracy %.4f (%.0f s)\n", kind.c_str(),
                static_cast<long long>(dr.student_params), dr.student_accuracy, dr.seconds);
    torch::jit::Module student = Must(LoadModel(d.output_path), "load student");

    PruneOptions po;
    po.student = student;
    po.spec = spec;
    po.teacher = &teacher;
    po.train = train;
    po.holdout = held;
    po.target_fraction = prune_fraction;
    po.by_macs = kind == "cnn";  // conv MACs dominate CNN latency; MLP cost is its weights
    po.steps = prune_steps;
    po.recovery_steps = recovery_steps;
    po.threads = threads;
    po.progress = LineProgress(start);
    PruneReport pr = Must(PruneWithRecovery(po), "prune");
    std::printf("%s pruning (%s, holdout accuracy):\n%s", kind.c_str(), po.by_macs ? "MACs" : "params",
                pr.ToText().c_str());

    // QAT for the native int8 module (conv rounding included, the default)
    // and, for the CNN, a twin run without conv rounding for the QNNPACK
    // module, which keeps convolutions in float.
    auto qat_for = [&](bool quantize_conv) {
      torch::jit::Module qat = Must(CloneForTraining(pr.module), "clone");
      QatTrainOptions qo;
      qo.qat.quantize_conv = quantize_conv;
      qo.teacher = &teacher;
      qo.train = train;
      qo.steps = qat_steps;
      qo.threads = threads;
      qo.progress = LineProgress(start);
      if (Status s = QatFineTune(qat, pr.spec, qo); !s.ok()) {
        std::cerr << "qat: " << s.ToString() << std::endl;
        std::exit(1);
      }
      return qat;
    };
    torch::jit::Module qat = qat_for(true);
    torch::jit::Module qat_qnnpack = kind == "cnn" ? qat_for(false) : qat;

    at::set_num_threads(1);
    Int8Options qnnpack;
    qnnpack.kernels = "qnnpack";
    std::vector<Variant> vs;
    AddVariant(vs, "float", student, base + "_float_served.pt", test);
    AddVariant(vs, "float frozen", student, base + "_float_frozen.pt", test, /*optimize_for_inference=*/false);
    AddVariant(vs, "pruned", pr.module, base + "_pruned.pt", test);
    AddVariant(vs, "pruned frozen", pr.module, base + "_pruned_frozen.pt", test, false);
    AddVariant(vs, "int8", Must(QuantizeDynamicInt8(student, spec), "int8"), base + "_int8.pt", test);
    AddVariant(vs, "pruned+int8", Must(QuantizeDynamicInt8(qat, pr.spec), "pruned int8"), base + "_pruned_int8.pt",
               test);
    AddVariant(vs, "pruned+int8 noQAT", Must(QuantizeDynamicInt8(pr.module, pr.spec), "pruned int8 noqat"),
               base + "_pruned_int8_noqat.pt", test);
    AddVariant(vs, "int8 qnnpack", Must(QuantizeDynamicInt8(student, spec, qnnpack), "int8 qnnpack"),
               base + "_int8_qnnpack.pt", test);
    AddVariant(vs, "pruned+int8 qnnpack", Must(QuantizeDynamicInt8(qat_qnnpack, pr.spec, qnnpack), "pruned int8 qnnpack"),
               base + "_pruned_int8_qnnpack.pt", test);
    Report(kind, vs, test, rounds, iters1, iters64);
  }
  std::printf("\ntotal %.0f s\n", Now() - start);
  return 0;
}
