// See offline.h.
#include "learner/offline.h"

#include <unistd.h>

#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <sstream>

#include "learner/evaluate.h"
#include "learner/kd_loss.h"
#include "learner/model/model_io.h"
#include "learner/train_step.h"
#include "learner/trainer.h"

namespace distilld::learner {

int64_t CountParameters(const torch::jit::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

ProgressCallback TerminalProgress() {
  if (!::isatty(STDERR_FILENO)) return [](const ProgressEvent&) {};
  return [](const ProgressEvent& e) {
    const int width = 30;
    const int filled = e.total > 0 ? static_cast<int>(width * e.step / e.total) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%-8s [%s] %6lld/%-6lld loss %.4f", e.stage.c_str(), bar.c_str(),
                 static_cast<long long>(e.step), static_cast<long long>(e.total), e.loss);
    if (e.step >= e.total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
}

namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs `epochs` shuffled passes of TrainStep (RunTrainLoop). Reports
// progress about every 1% of the stage.
Status RunEpochs(torch::jit::Module& student, torch::optim::Optimizer& opt, const Batch& data,
                 const StepOptions& so, int epochs, int batch_size, std::mt19937_64& rng,
                 const std::string& stage, const ProgressCallback& progress, const std::atomic<bool>* cancel) {
  TrainLoopOptions loop;
  loop.batch_size = std::max(1, batch_size);
  loop.steps = StepsPerEpoch(data.size(), loop.batch_size) * epochs;
  const int64_t total = loop.steps;
  const int64_t every = std::max<int64_t>(1, total / 100);
  loop.before_step = [cancel](int64_t, bool) {
    if (cancel != nullptr && cancel->load()) return Status::Cancelled("cancelled");
    return Status::Ok();
  };
  loop.after_step = [&](int64_t step, const StepStats& st) {
    if (progress && ((step + 1) % every == 0 || step + 1 == total)) progress({stage, step + 1, total, st.loss});
  };
  Status st = RunTrainLoop(student, opt, data, so, rng, loop);
  if (!st.ok() && st.code() != StatusCode::kCancelled) return st.WithContext(stage);
  return st;
}

std::vector<torch::Tensor> Params(const torch::jit::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p);
  return out;
}

Result<double> TestAccuracy(torch::jit::Module& m, const Dataset& test) {
  ASSIGN_OR_RETURN(EvalResult r, EvaluateTensors(m, test.images, test.labels, torch::Tensor(), 500));
  return r.accuracy();
}

int64_t FileSize(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

}  // namespace

Result<TrainReport> TrainTeacher(const TrainTeacherOptions& o) {
  if (o.output_path.empty()) return Status::InvalidArgument("output_path is required");
  if (o.epochs <= 0 || o.batch_size <= 0) return Status::InvalidArgument("epochs and batch_size must be > 0");
  const auto t0 = std::chrono::steady_clock::now();
  at::set_num_threads(std::max(1, o.threads));
  ASSIGN_OR_RETURN(Dataset train, LoadIdxDataset(o.data_dir, "train", o.train_limit));
  ASSIGN_OR_RETURN(Dataset test, LoadIdxDataset(o.data_dir, "t10k", o.test_limit));
  ArchSpec arch = o.arch;
  arch.input_shape = {train.images.size(1), train.images.size(2), train.images.size(3)};
  ASSIGN_OR_RETURN(torch::jit::Module built, BuildModel(arch, o.seed));
  ASSIGN_OR_RETURN(torch::jit::Module model, CloneForTraining(built));
  ASSIGN_OR_RETURN(auto opt, MakeOptimizer(config::Optimizer::kAdam, o.learning_rate, Params(model)));
  std::mt19937_64 rng(o.seed);
  StepOptions so;
  so.loss.alpha = 1.0;
  Batch data{train.images, train.labels, {}, {}};
  RETURN_IF_ERROR(RunEpochs(model, *opt, data, so, o.epochs, o.batch_size, rng, "teacher", o.progress, o.cancel));
  model.eval();
  TrainReport r;
  ASSIGN_OR_RETURN(r.test_accuracy, TestAccuracy(model, test));
  ASSIGN_OR_RETURN(SavedModel saved, SaveModelAtomic(model, o.output_path));
  r.path = saved.path;
  r.sha256 = saved.sha256;
  r.file_bytes = saved.size_bytes;
  r.params = CountParameters(model);
  r.seconds = Seconds(t0);
  return r;
}

std::string DistillReport::ToText() const {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(4);
  os << "teacher: accuracy " << teacher_accuracy << ", " << teacher_params << " params, " << teacher_bytes
     << " bytes\n";
  os << "student: accuracy " << student_accuracy << ", " << student_params << " params, " << student_bytes
     << " bytes -> " << output_path << "\n";
  os << "student/teacher: accuracy " << (teacher_accuracy > 0 ? student_accuracy / teacher_accuracy : 0.0)
     << ", params " << (teacher_params > 0 ? static_cast<double>(student_params) / teacher_params : 0.0) << "\n";
  os << "stages:";
  for (double a : stage_accuracy) os << " " << a;
  os << (feature_stage_used ? "" : " (no feature term)") << "\n";
  os.precision(1);
  os << "time: " << seconds << " s\n";
  return os.str();
}

std::string DistillReport::ToJson() const {
  std::ostringstream os;
  os.precision(6);
  os << "{\"teacher_accuracy\":" << teacher_accuracy << ",\"student_accuracy\":" << student_accuracy
     << ",\"teacher_params\":" << teacher_params << ",\"student_params\":" << student_params
     << ",\"teacher_bytes\":" << teacher_bytes << ",\"student_bytes\":" << student_bytes
     << ",\"seconds\":" << seconds << ",\"feature_stage_used\":" << (feature_stage_used ? "true" : "false")
     << ",\"stage_accuracy\":[";
  for (size_t i = 0; i < stage_accuracy.size(); ++i) os << (i ? "," : "") << stage_accuracy[i];
  os << "],\"output_path\":\"" << output_path << "\",\"sha256\":\"" << sha256 << "\"}";
  return os.str();
}

Result<DistillReport> DistillOffline(const DistillOptions& o) {
  if (o.teacher_path.empty() || o.output_path.empty()) {
    return Status::InvalidArgument("teacher_path and output_path are required");
  }
  if (o.batch_size <= 0 || o.stage1_epochs < 0 || o.stage2_epochs < 0 || o.stage3_epochs < 0) {
    return Status::InvalidArgument("bad epochs or batch_size");
  }
  const auto t0 = std::chrono::steady_clock::now();
  at::set_num_threads(std::max(1, o.threads));
  ASSIGN_OR_RETURN(Dataset train, LoadIdxDataset(o.data_dir, "train", o.train_limit));
  ASSIGN_OR_RETURN(Dataset test, LoadIdxDataset(o.data_dir, "t10k", o.test_limit));
  ASSIGN_OR_RETURN(torch::jit::Module teacher, LoadModel(o.teacher_path));
  torch::jit::Module initial;
  if (o.student_path.empty()) {
    ArchSpec arch = o.student_arch;
    arch.input_shape = {train.images.size(1), train.images.size(2), train.images.size(3)};
    ASSIGN_OR_RETURN(initial, BuildModel(arch, o.seed));
  } else {
    ASSIGN_OR_RETURN(initial, LoadModel(o.student_path));
  }
  ASSIGN_OR_RETURN(torch::jit::Module student, CloneForTraining(initial));

  DistillReport rep;
  ASSIGN_OR_RETURN(rep.teacher_accuracy, TestAccuracy(teacher, test));
  rep.teacher_params = CountParameters(teacher);
  rep.teacher_bytes = FileSize(o.teacher_path);
  rep.student_params = CountParameters(student);

  std::mt19937_64 rng(o.seed);
  Batch data{train.images, train.labels, {}, {}};
  auto record_stage = [&]() -> Status {
    ASSIGN_OR_RETURN(double acc, TestAccuracy(student, test));
    rep.stage_accuracy.push_back(acc);
    student.train();
    return Status::Ok();
  };

  if (o.labels_only) {
    StepOptions so;
    so.loss.alpha = 1.0;
    ASSIGN_OR_RETURN(auto opt, MakeOptimizer(config::Optimizer::kAdam, o.learning_rate, Params(student)));
    RETURN_IF_ERROR(RunEpochs(student, *opt, data, so, o.stage1_epochs + o.stage2_epochs, o.batch_size, rng,
                              "baseline", o.progress, o.cancel));
    RETURN_IF_ERROR(record_stage());
    ASSIGN_OR_RETURN(auto opt3, MakeOptimizer(config::Optimizer::kAdam, o.learning_rate * 0.1, Params(student)));
    RETURN_IF_ERROR(RunEpochs(student, *opt3, data, so, o.stage3_epochs, o.batch_size, rng, "baseline",
                              o.progress, o.cancel));
    RETURN_IF_ERROR(record_stage());
  } else {
    // Teacher outputs once for the whole training set.
    ASSIGN_OR_RETURN(data.teacher_logits, ForwardInBatches(teacher, train.images, 500));
    // Stage 1: hard labels + KD at a low temperature.
    {
      StepOptions so;
      so.loss.alpha = o.alpha;
      so.loss.temperature = o.stage1_temperature;
      ASSIGN_OR_RETURN(auto opt, MakeOptimizer(config::Optimizer::kAdam, o.learning_rate, Params(student)));
      RETURN_IF_ERROR(RunEpochs(student, *opt, data, so, o.stage1_epochs, o.batch_size, rng, "stage1",
                                o.progress, o.cancel));
      RETURN_IF_ERROR(record_stage());
    }
    // Stage 2: intermediate feature matching plus KD at the main temperature.
    {
      std::vector<int64_t> shape(train.images.sizes().begin() + 1, train.images.sizes().end());
      StepOptions so;
      so.loss.alpha = o.alpha;
      so.loss.temperature = o.temperature;
      std::vector<torch::Tensor> params = Params(student);
      std::optional<FeatureProjector> proj;
      if (!o.feature_method.empty() && o.feature_weight > 0 && teacher.find_method(o.feature_method) &&
          student.find_method(o.feature_method)) {
        ASSIGN_OR_RETURN(int64_t sw, FeatureWidth(student, o.feature_method, shape));
        ASSIGN_OR_RETURN(int64_t tw, FeatureWidth(teacher, o.feature_method, shape));
        ASSIGN_OR_RETURN(data.teacher_features, ForwardInBatches(teacher, train.images, 500, o.feature_method));
        torch::manual_seed(o.seed);  // projector init
        proj.emplace(sw, tw);
        for (const auto& p : (*proj)->parameters()) params.push_back(p);
        so.feature_method = o.feature_method;
        so.feature_weight = o.feature_weight;
        so.projector = &*proj;
        rep.feature_stage_used = true;
      }
      ASSIGN_OR_RETURN(auto opt, MakeOptimizer(config::Optimizer::kAdam, o.learning_rate, std::move(params)));
      RETURN_IF_ERROR(RunEpochs(student, *opt, data, so, o.stage2_epochs, o.batch_size, rng, "stage2",
                                o.progress, o.cancel));
      data.teacher_features = torch::Tensor();
      RETURN_IF_ERROR(record_stage());
    }
    // Stage 3: fine-tune on the task (labels only, lower LR).
    {
      StepOptions so;
      so.loss.alpha = 1.0;
      Batch labels_only{data.inputs, data.labels, {}, {}};
      ASSIGN_OR_RETURN(auto opt, MakeOptimizer(config::Optimizer::kAdam, o.learning_rate * 0.1, Params(student)));
      RETURN_IF_ERROR(RunEpochs(student, *opt, labels_only, so, o.stage3_epochs, o.batch_size, rng, "stage3",
                                o.progress, o.cancel));
      RETURN_IF_ERROR(record_stage());
    }
  }
  student.eval();
  rep.student_accuracy = rep.stage_accuracy.back();
  ASSIGN_OR_RETURN(SavedModel saved, SaveModelAtomic(student, o.output_path));
  rep.output_path = saved.path;
  rep.sha256 = saved.sha256;
  rep.student_bytes = saved.size_bytes;
  rep.seconds = Seconds(t0);
  return rep;
}

}  // namespace distilld::learner
