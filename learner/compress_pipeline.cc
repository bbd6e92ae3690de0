#include "learner/compress_pipeline.h"

#include <sstream>

#include "learner/evaluate.h"
#include "learner/idx_dataset.h"
#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/prune.h"
#include "learner/quantize.h"
#include "learner/train_step.h"

namespace distilld::learner {
namespace {

Dataset Slice(const Dataset& d, int64_t begin, int64_t end) {
  Dataset out;
  out.images = d.images.slice(0, begin, end);
  out.labels = d.labels.slice(0, begin, end);
  return out;
}

double Accuracy(torch::jit::Module& m, const Dataset& d) {
  torch::NoGradGuard ng;
  Result<torch::Tensor> logits = ForwardInBatches(m, d.images, 1000);
  if (!logits.ok()) return 0.0;
  return logits->argmax(1).eq(d.labels).sum().item<double>() / static_cast<double>(d.size());
}

}  // namespace

std::string CompressReport::ToText() const {
  std::ostringstream os;
  os << "compressed student: parameters " << params_before << " -> " << params_after << ", widths [";
  for (size_t i = 0; i < widths_after.size(); ++i) os << (i ? ", " : "") << widths_after[i];
  os << "]\n  held-out accuracy " << holdout_accuracy_before << " -> " << holdout_accuracy_after
     << ", test accuracy " << test_accuracy_after << ", file " << file_bytes << " bytes\n";
  return os.str();
}

Result<CompressReport> CompressStudent(const CompressOptions& o) {
  if (o.qat_bits != 0 && o.qat_bits != 8 && o.qat_bits != 4) {
    return Status::InvalidArgument("qat bits: expected 8 or 4, got " + std::to_string(o.qat_bits));
  }
  if (o.prune_fraction < 0 || o.prune_fraction >= 1) {
    return Status::InvalidArgument("prune fraction: expected [0, 1)");
  }
  at::set_num_threads(o.threads);
  ASSIGN_OR_RETURN(torch::jit::Module teacher, LoadModel(o.teacher_path));
  ASSIGN_OR_RETURN(torch::jit::Module loaded, LoadModel(o.student_path));
  ASSIGN_OR_RETURN(torch::jit::Module student, CloneForTraining(loaded));
  ASSIGN_OR_RETURN(Dataset all, LoadIdxDataset(o.data_dir, "train"));
  ASSIGN_OR_RETURN(Dataset test, LoadIdxDataset(o.data_dir, "t10k"));
  const int64_t n = all.size();
  if (o.holdout <= 0 || o.holdout >= n) return Status::InvalidArgument("holdout: expected (0, training size)");
  Dataset holdout = Slice(all, n - o.holdout, n);
  int64_t train_end = n - o.holdout;
  if (o.train_limit > 0) train_end = std::min(train_end, o.train_limit);
  Dataset train = Slice(all, 0, train_end);

  std::vector<int64_t> input_shape(all.images.sizes().begin() + 1, all.images.sizes().end());
  ASSIGN_OR_RETURN(ArchSpec spec, InferArchSpec(student, input_shape));
  CompressReport report;
  report.params_before = ArchParameterCount(spec);
  report.holdout_accuracy_before = Accuracy(student, holdout);

  if (o.prune_fraction > 0) {
    PruneOptions p;
    p.student = student;
    p.spec = spec;
    p.teacher = &teacher;
    p.train = train;
    p.holdout = holdout;
    p.target_fraction = o.prune_fraction;
    p.steps = o.prune_steps;
    p.recovery_steps = o.recovery_steps;
    p.threads = o.threads;
    p.seed = o.seed;
    p.progress = o.progress;
    ASSIGN_OR_RETURN(PruneReport pr, PruneWithRecovery(p));
    ASSIGN_OR_RETURN(student, CloneForTraining(pr.module));
    spec = pr.spec;
  }
  if (o.qat_bits != 0) {
    QatTrainOptions q;
    q.qat.weight_bits = o.qat_bits;
    q.teacher = &teacher;
    q.train = train;
    q.steps = o.qat_steps;
    q.threads = o.threads;
    q.seed = o.seed;
    q.progress = o.progress;
    RETURN_IF_ERROR(QatFineTune(student, spec, q));
  }
  student.eval();
  torch::jit::Module out = student;
  if (o.int8) {
    Int8Options i8;
    i8.weight_bits = o.qat_bits == 4 ? 4 : 8;
    ASSIGN_OR_RETURN(out, QuantizeDynamicInt8(student, spec, i8));
  }
  report.params_after = ArchParameterCount(spec);
  report.widths_after = spec.hidden;
  if (spec.kind == "cnn") report.widths_after.insert(report.widths_after.begin(), spec.channels.begin(), spec.channels.end());
  report.holdout_accuracy_after = Accuracy(out, holdout);
  report.test_accuracy_after = Accuracy(out, test);
  ASSIGN_OR_RETURN(SavedModel saved, SaveModelAtomic(out, o.output_path));
  report.file_bytes = saved.size_bytes;
  return report;
}

}  // namespace distilld::learner
