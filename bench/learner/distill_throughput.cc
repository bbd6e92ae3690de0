// Benchmark (a): distillation throughput of the C++ training step.
//
// MLP 784-64-10 student, a cached-logit batch of 128, KD loss (a=0.5, T=4),
// Adam. The same loop runs in Python PyTorch (distill_throughput.py, same
// saved model, same thread count) in the same run, and the ratio is printed.
#include <CLI/CLI.hpp>
#include <ATen/Parallel.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/train_step.h"

using namespace distilld::learner;

namespace {

double ProcessCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Rate {
  double wall = 0;  // samples per second of wall time
  double cpu = 0;   // samples per second of process CPU time
};

Rate CppSamplesPerSecond(const torch::jit::Module& base, int steps, int warmup) {
  torch::manual_seed(0);
  Batch b;
  b.inputs = torch::rand({128, 1, 28, 28});
  b.teacher_logits = torch::randn({128, 10}) * 3;
  b.labels = torch::randint(0, 10, {128}, torch::kInt64);
  auto student = CloneForTraining(base);
  std::vector<torch::Tensor> params;
  for (const auto& p : student->parameters()) params.push_back(p);
  auto opt = MakeOptimizer(distilld::config::Optimizer::kAdam, 1e-3, params);
  StepOptions so;
  so.loss.alpha = 0.5;
  so.loss.temperature = 4.0;
  for (int i = 0; i < warmup; ++i) {
    if (!TrainStep(*student, **opt, b, so).ok()) std::abort();
  }
  auto t0 = std::chrono::steady_clock::now();
  const double c0 = ProcessCpuSeconds();
  for (int i = 0; i < steps; ++i) {
    if (!TrainStep(*student, **opt, b, so).ok()) std::abort();
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Rate{steps * 128.0 / s, steps * 128.0 / (ProcessCpuSeconds() - c0)};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("distillation throughput: C++ vs Python");
  std::vector<int> thread_counts = {1, 2};
  int steps = 300, warmup = 30, repeats = 3;
  std::string python = "/usr/bin/python3";
  std::string source_dir = std::getenv("DISTILLD_SOURCE_DIR") ? std::getenv("DISTILLD_SOURCE_DIR")
                                                              : DISTILLD_SOURCE_DIR_DEFAULT;
  std::string model_path = "bench_mlp_784_64_10.pt";
  app.add_option("--threads", thread_counts);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--repeats", repeats, "alternating C++/Python runs; the best of each is reported");
  app.add_option("--python", python);
  CLI11_PARSE(app, argc, argv);

  auto base = BuildModel(ArchSpec{"mlp", {1, 28, 28}, 10, {64}, {}}, 1);
  if (!base.ok() || !SaveModelAtomic(*base, model_path).ok()) {
    std::cerr << "cannot build/save the model\n";
    return 1;
  }
  // Wall-time rates (best of the repeats) and their ratios; the last two
  // columns are the ratios of samples per second of process CPU time, which
  // other processes on a loaded machine disturb much less.
  std::printf(
      "| threads | C++ samples/s | Python jit samples/s | Python eager samples/s | C++/jit | C++/eager "
      "| C++/jit (CPU time) | C++/eager (CPU time) |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (int threads : thread_counts) {
    at::set_num_threads(threads);
    double best_cpp = 0, best_jit = 0, best_eager = 0, cpu_cpp = 0, cpu_jit = 0, cpu_eager = 0;
    for (int r = 0; r < repeats; ++r) {
      const Rate cpp = CppSamplesPerSecond(*base, steps, warmup);
      best_cpp = std::max(best_cpp, cpp.wall);
      cpu_cpp = std::max(cpu_cpp, cpp.cpu);
      std::ostringstream cmd;
      cmd << python << " " << source_dir << "/bench/learner/distill_throughput.py " << model_path << " " << threads
          << " " << steps << " " << warmup;
      FILE* p = ::popen(cmd.str().c_str(), "r");
      if (p == nullptr) return 1;
      char line[256];
      while (std::fgets(line, sizeof(line), p) != nullptr) {
        double v = 0;
        if (std::sscanf(line, "jit %lf", &v) == 1) best_jit = std::max(best_jit, v);
        if (std::sscanf(line, "eager %lf", &v) == 1) best_eager = std::max(best_eager, v);
        if (std::sscanf(line, "jit_cpu %lf", &v) == 1) cpu_jit = std::max(cpu_jit, v);
        if (std::sscanf(line, "eager_cpu %lf", &v) == 1) cpu_eager = std::max(cpu_eager, v);
      }
      if (::pclose(p) != 0) {
        std::cerr << "python run failed: " << cmd.str() << "\n";
        return 1;
      }
    }
    std::printf("| %d | %.0f | %.0f | %.0f | %.2fx | %.2fx | %.2fx | %.2fx |\n", threads, best_cpp, best_jit,
                best_eager, best_cpp / best_jit, best_cpp / best_eager, cpu_cpp / cpu_jit, cpu_cpp / cpu_eager);
    std::fflush(stdout);
  }
  std::printf("target: C++ >= 1.5x the Python loop\n");
  return 0;
}
