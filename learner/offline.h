// Offline training entry points for the CLI (`distilld train-teacher`,
// `distilld distill`) and the benchmarks.
//
//   TrainTeacher:  trains a CNN from scratch on an IDX dataset (Fashion-MNIST
//                  by default) and saves it as TorchScript.
//   DistillOffline: three-stage distillation of a student from a teacher:
//                  1. hard labels + KD at a low temperature;
//                  2. intermediate feature matching through the `features`
//                     methods (b*MSE(proj(f_s), f_t), plus the KD term);
//                  3. fine-tuning on the task (labels only, lower LR).
//
// Both are blocking calls that run in the caller's thread and set its
// LibTorch thread count (at::set_num_threads(threads)). They own nothing
// after returning. `progress` is called from that thread, about every 1% of
// a stage; `cancel` (optional) is polled between steps and makes the call
// return Cancelled without writing the output file.
//
// Example (what daemon/main.cc does):
//   TrainTeacherOptions t;  t.output_path = "state/teacher.pt";
//   t.progress = TerminalProgress();
//   ASSIGN_OR_RETURN(TrainReport r, TrainTeacher(t));
//   DistillOptions d;  d.teacher_path = t.output_path;  d.output_path = "student.pt";
//   ASSIGN_OR_RETURN(DistillReport rep, DistillOffline(d));
//   std::cout << rep.ToText();
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "learner/idx_dataset.h"
#include "learner/model/arch.h"

namespace distilld::learner {

struct ProgressEvent {
  std::string stage;   // "teacher", "stage1", "stage2", "stage3", "baseline", "eval"
  int64_t step = 0;    // 1-based step within the stage
  int64_t total = 0;   // steps in the stage
  double loss = 0.0;   // latest step's loss
};
using ProgressCallback = std::function<void(const ProgressEvent&)>;

// A progress bar on stderr (redrawn in place); prints nothing when stderr is
// not a terminal. For the CLI.
ProgressCallback TerminalProgress();

struct TrainTeacherOptions {
  std::string data_dir = kDefaultFashionMnistDir;  // IDX files, gzipped or not
  std::string output_path;                         // required
  // Default: CNN 16-32 channels, 128 hidden (~206k parameters, ~90% on
  // Fashion-MNIST after 3 epochs).
  ArchSpec arch = {"cnn", {1, 28, 28}, 10, {128}, {16, 32}};
  int epochs = 3;
  int batch_size = 64;
  double learning_rate = 1e-3;  // Adam
  int threads = 2;
  uint64_t seed = 42;
  int64_t train_limit = 0;  // >0: first N training samples only (tests, quick runs)
  int64_t test_limit = 0;   // >0: first N test samples only
  ProgressCallback progress;
  const std::atomic<bool>* cancel = nullptr;
};

struct TrainReport {
  std::string path;
  std::string sha256;
  double test_accuracy = 0.0;
  int64_t params = 0;
  int64_t file_bytes = 0;
  double seconds = 0.0;
};

Result<TrainReport> TrainTeacher(const TrainTeacherOptions& options);

struct DistillOptions {
  std::string teacher_path;   // required: TorchScript teacher (forward; `features` for stage 2)
  std::string student_path;   // initial student .pt; "" = build `student_arch`
  // Default: CNN 8-16 channels, 16 hidden (~14k parameters, <10% of the
  // default teacher).
  ArchSpec student_arch = {"cnn", {1, 28, 28}, 10, {16}, {8, 16}};
  std::string output_path;    // required
  std::string data_dir = kDefaultFashionMnistDir;
  int64_t train_limit = 0;
  int64_t test_limit = 0;
  int stage1_epochs = 3;
  int stage2_epochs = 1;
  int stage3_epochs = 1;
  double stage1_temperature = 2.0;  // "low T" for stage 1
  double alpha = 0.5;               // CE weight in stages 1 and 2
  double temperature = 4.0;         // KD temperature in stage 2
  std::string feature_method = "features";  // "" or missing on either model: stage 2 skips the term
  double feature_weight = 0.1;       // b; the teacher's raw ReLU features are large
  double learning_rate = 1e-3;      // Adam; stage 3 uses a tenth
  int batch_size = 64;
  int threads = 2;
  uint64_t seed = 42;
  // Baseline mode: train the same student on labels alone for the same total
  // number of epochs (no teacher term); the teacher is still evaluated.
  bool labels_only = false;
  ProgressCallback progress;
  const std::atomic<bool>* cancel = nullptr;
};

struct DistillReport {
  double teacher_accuracy = 0.0;
  double student_accuracy = 0.0;
  std::vector<double> stage_accuracy;  // student test accuracy after each stage
  int64_t teacher_params = 0;
  int64_t student_params = 0;
  int64_t teacher_bytes = 0;
  int64_t student_bytes = 0;
  double seconds = 0.0;
  std::string output_path;
  std::string sha256;
  bool feature_stage_used = false;
  // Human-readable multi-line summary, and a JSON object of the same fields.
  std::string ToText() const;
  std::string ToJson() const;
};

Result<DistillReport> DistillOffline(const DistillOptions& options);

// Number of parameters (elements) of a module.
int64_t CountParameters(const torch::jit::Module& module);

}  // namespace distilld::learner
