// Benchmark (c): offline distillation on Fashion-MNIST.
//
// Trains (or reuses) the default CNN teacher, then distills the default small
// CNN student in three stages, and trains the same student on labels alone
// for the same number of epochs. Prints teacher vs student accuracy and
// parameter counts in one run. See docs/benchmarks-learner.md.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "learner/model/model_io.h"
#include "learner/offline.h"

using namespace distilld::learner;

namespace {
// Progress lines every 10% of a stage on stdout (the bench usually runs
// redirected, where TerminalProgress() stays silent).
ProgressCallback LineProgress() {
  auto start = std::chrono::steady_clock::now();
  auto last = std::make_shared<std::pair<std::string, int64_t>>();
  return [start, last](const ProgressEvent& e) {
    const int64_t decile = e.total > 0 ? 10 * e.step / e.total : 0;
    if (last->first == e.stage && last->second == decile) return;
    *last = {e.stage, decile};
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("  %s %lld/%lld loss %.4f (%.0f s)\n", e.stage.c_str(), static_cast<long long>(e.step),
                static_cast<long long>(e.total), e.loss, s);
    std::fflush(stdout);
  };
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app("offline distillation benchmark");
  std::string data_dir = kDefaultFashionMnistDir, teacher = "bench_teacher.pt", out_dir = ".";
  int threads = 2, teacher_epochs = 3, s1 = 2, s2 = 1, s3 = 1;
  int64_t train_limit = 0;
  bool retrain = false;
  app.add_option("--data-dir", data_dir);
  app.add_option("--teacher", teacher, "teacher .pt; trained here if missing (or --retrain-teacher)");
  app.add_option("--out-dir", out_dir);
  app.add_option("--threads", threads);
  app.add_option("--teacher-epochs", teacher_epochs);
  app.add_option("--stage1-epochs", s1);
  app.add_option("--stage2-epochs", s2);
  app.add_option("--stage3-epochs", s3);
  app.add_option("--train-limit", train_limit, "use only the first N training images");
  app.add_flag("--retrain-teacher", retrain);
  CLI11_PARSE(app, argc, argv);

  if (retrain || !std::filesystem::exists(teacher)) {
    TrainTeacherOptions t;
    t.data_dir = data_dir;
    t.output_path = teacher;
    t.epochs = teacher_epochs;
    t.threads = threads;
    t.train_limit = train_limit;
    t.progress = LineProgress();
    auto r = TrainTeacher(t);
    if (!r.ok()) {
      std::cerr << r.status().ToString() << "\n";
      return 1;
    }
    std::printf("teacher trained: accuracy %.4f, %lld params, %.1f s -> %s\n", r->test_accuracy,
                static_cast<long long>(r->params), r->seconds, teacher.c_str());
  } else {
    std::printf("teacher reused: %s\n", teacher.c_str());
  }

  DistillOptions d;
  d.teacher_path = teacher;
  d.data_dir = data_dir;
  d.train_limit = train_limit;
  d.threads = threads;
  d.stage1_epochs = s1;
  d.stage2_epochs = s2;
  d.stage3_epochs = s3;
  d.progress = LineProgress();
  d.output_path = (std::filesystem::path(out_dir) / "bench_student_kd.pt").string();
  auto kd = DistillOffline(d);
  if (!kd.ok()) {
    std::cerr << kd.status().ToString() << "\n";
    return 1;
  }
  DistillOptions b = d;
  b.labels_only = true;
  b.output_path = (std::filesystem::path(out_dir) / "bench_student_labels.pt").string();
  auto lo = DistillOffline(b);
  if (!lo.ok()) {
    std::cerr << lo.status().ToString() << "\n";
    return 1;
  }
  std::printf("\n== KD student ==\n%s", kd->ToText().c_str());
  std::printf("== labels-only student ==\n%s", lo->ToText().c_str());
  const double ratio = kd->student_accuracy / kd->teacher_accuracy;
  const double pratio = static_cast<double>(kd->student_params) / static_cast<double>(kd->teacher_params);
  std::printf("\n| model | params | test accuracy | vs teacher | time (s) |\n|---|---|---|---|---|\n");
  std::printf("| teacher CNN | %lld | %.4f | 1.000 | - |\n", static_cast<long long>(kd->teacher_params),
              kd->teacher_accuracy);
  std::printf("| student, 3-stage KD | %lld (%.1f%%) | %.4f | %.3f | %.1f |\n",
              static_cast<long long>(kd->student_params), 100 * pratio, kd->student_accuracy, ratio, kd->seconds);
  std::printf("| student, labels only | %lld | %.4f | %.3f | %.1f |\n", static_cast<long long>(lo->student_params),
              lo->student_accuracy, lo->student_accuracy / lo->teacher_accuracy, lo->seconds);
  std::printf("target: params <= 10%% of teacher: %s; accuracy >= 97%% of teacher: %s; KD - labels-only: %+.4f\n",
              pratio <= 0.10 ? "met" : "NOT met", ratio >= 0.97 ? "met" : "NOT met",
              kd->student_accuracy - lo->student_accuracy);
  return 0;
}
