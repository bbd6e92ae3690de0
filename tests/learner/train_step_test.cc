#include "tests/learner/torch_doctest.h"
#include <zlib.h>

#include <fstream>

#include "learner/evaluate.h"
#include "learner/idx_dataset.h"
#include "learner/model/arch.h"
#include "learner/train_step.h"
#include "learner/trainer.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

// Three Gaussian blobs in a 1x2x2 "image": class c has mean +2 on pixel c.
Batch Blobs(int64_t n, uint64_t seed) {
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  Batch b;
  b.labels = torch::randint(0, 3, {n}, gen, torch::kInt64);
  b.inputs = torch::randn({n, 4}, gen) * 0.5;
  for (int64_t i = 0; i < n; ++i) b.inputs[i][b.labels[i].item<int64_t>()] += 2.0;
  b.inputs = b.inputs.reshape({n, 1, 2, 2});
  return b;
}

ArchSpec TinyMlp() { return ArchSpec{"mlp", {1, 2, 2}, 3, {8}, {}}; }

TEST_CASE("training steps lower the loss and learn the task; the source model is untouched") {
  torch::manual_seed(1);
  auto base = BuildModel(TinyMlp(), 3);
  REQUIRE(base.ok());
  auto student = CloneForTraining(*base);
  REQUIRE(student.ok());
  std::vector<torch::Tensor> params;
  for (const auto& p : student->parameters()) params.push_back(p);
  auto opt = MakeOptimizer(config::Optimizer::kAdam, 0.05, params);
  REQUIRE(opt.ok());
  Batch train = Blobs(128, 1), test = Blobs(256, 2);
  auto before = EvaluateTensors(*base, test.inputs, test.labels, torch::Tensor());
  REQUIRE(before.ok());
  StepOptions so;
  so.loss.alpha = 1.0;
  double first = 0, last = 0;
  for (int i = 0; i < 60; ++i) {
    auto st = TrainStep(*student, **opt, train, so);
    REQUIRE(st.ok());
    if (i == 0) first = st->loss;
    last = st->loss;
    CHECK(st->samples == 128);
  }
  CHECK(last < first * 0.5);
  auto after = EvaluateTensors(*student, test.inputs, test.labels, torch::Tensor());
  REQUIRE(after.ok());
  CHECK(after->accuracy() > 0.9);
  CHECK(after->accuracy() > before->accuracy());
  CHECK(after->per_class.size() == 3);
  // The clone trained; the original did not move.
  auto again = EvaluateTensors(*base, test.inputs, test.labels, torch::Tensor());
  CHECK(again->correct == before->correct);
}

TEST_CASE("the train loop sets each step's learning rate from its schedule (a warm-up)") {
  torch::manual_seed(3);
  auto base = BuildModel(TinyMlp(), 3);
  REQUIRE(base.ok());
  Batch train = Blobs(64, 6);
  StepOptions so;
  so.loss.alpha = 1.0;
  // One Adam step moves every weight by about the learning rate whatever its
  // gradient, so the first step's largest change tells the rate it ran at.
  auto first_step_change = [&](std::function<double(int64_t)> schedule, std::vector<int64_t>* asked,
                               double* lr_after) {
    auto student = CloneForTraining(*base);
    REQUIRE(student.ok());
    std::vector<torch::Tensor> params;
    for (const auto& p : student->parameters()) params.push_back(p);
    auto opt = MakeOptimizer(config::Optimizer::kAdam, 0.05, params);
    REQUIRE(opt.ok());
    std::vector<torch::Tensor> before;
    for (const auto& p : params) before.push_back(p.detach().clone());
    TrainLoopOptions loop;
    loop.steps = 1;
    loop.batch_size = 64;
    if (schedule) {
      loop.learning_rate = [&, schedule](int64_t step) {
        asked->push_back(step);
        return schedule(step);
      };
    }
    std::mt19937_64 rng(7);
    REQUIRE(RunTrainLoop(*student, **opt, train, so, rng, loop).ok());
    *lr_after = (*opt)->param_groups()[0].options().get_lr();
    double change = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      change = std::max(change, (params[i].detach() - before[i]).abs().max().item<double>());
    }
    return change;
  };
  std::vector<int64_t> asked;
  double lr_full = 0, lr_warm = 0;
  const double full = first_step_change(nullptr, &asked, &lr_full);
  const double warm = first_step_change([](int64_t step) { return 0.05 * (step + 1) / 100.0; }, &asked, &lr_warm);
  CHECK(lr_full == doctest::Approx(0.05));
  CHECK(lr_warm == doctest::Approx(0.0005));
  CHECK(asked == std::vector<int64_t>{0});
  CHECK(full == doctest::Approx(0.05).epsilon(0.05));
  CHECK(warm == doctest::Approx(0.0005).epsilon(0.05));
}

TEST_CASE("a diverging step aborts before the update") {
  auto m = BuildModel(TinyMlp(), 3);
  REQUIRE(m.ok());
  auto student = CloneForTraining(*m);
  REQUIRE(student.ok());
  std::vector<torch::Tensor> params;
  for (const auto& p : student->parameters()) params.push_back(p);
  auto opt = MakeOptimizer(config::Optimizer::kSgd, 1e9, params);
  REQUIRE(opt.ok());
  Batch b = Blobs(32, 4);
  b.teacher_logits = torch::randn({32, 3});
  StepOptions so;
  so.loss.alpha = 0.5;
  bool aborted = false;
  for (int i = 0; i < 20 && !aborted; ++i) {
    auto st = TrainStep(*student, **opt, b, so);
    if (!st.ok()) {
      CHECK(st.status().code() == StatusCode::kAborted);
      aborted = true;
    }
  }
  CHECK(aborted);
}

TEST_CASE("feature distillation step trains the projector too") {
  auto teacher = BuildModel(ArchSpec{"mlp", {1, 2, 2}, 3, {12}, {}}, 9);
  auto base = BuildModel(TinyMlp(), 3);
  REQUIRE((teacher.ok() && base.ok()));
  auto student = CloneForTraining(*base);
  REQUIRE(student.ok());
  auto tw = FeatureWidth(*teacher, "features", {1, 2, 2});
  auto sw = FeatureWidth(*student, "features", {1, 2, 2});
  REQUIRE((tw.ok() && sw.ok()));
  CHECK(*tw == 12);
  CHECK(*sw == 8);
  FeatureProjector proj(*sw, *tw);
  std::vector<torch::Tensor> params;
  for (const auto& p : student->parameters()) params.push_back(p);
  for (const auto& p : proj->parameters()) params.push_back(p);
  auto opt = MakeOptimizer(config::Optimizer::kAdam, 0.01, params);
  REQUIRE(opt.ok());
  Batch b = Blobs(16, 5);
  auto tl = ForwardInBatches(*teacher, b.inputs, 5);
  REQUIRE(tl.ok());
  CHECK(tl->size(0) == 16);
  b.teacher_logits = *tl;
  StepOptions so;
  so.feature_method = "features";
  so.feature_weight = 1.0;
  so.teacher = &*teacher;
  so.projector = &proj;
  torch::Tensor w0 = proj->parameters()[0].clone();
  auto st = TrainStep(*student, **opt, b, so);
  REQUIRE(st.ok());
  CHECK(st->feature > 0);
  CHECK_FALSE(torch::equal(w0, proj->parameters()[0]));
  CHECK(FeatureWidth(*student, "nope", {1, 2, 2}).status().code() == StatusCode::kInvalidArgument);
}

// Loss, gradients (captured before the update) and updated parameters of one
// TrainStep on a fresh clone of `base`.
struct StepResult {
  StepStats stats;
  std::vector<torch::Tensor> grads, params;
};
StepResult OneStep(const torch::jit::Module& base, const Batch& b, bool direct) {
  StepResult out;
  auto student = CloneForTraining(base);
  REQUIRE(student.ok());
  std::vector<torch::Tensor> params;
  for (const auto& p : student->parameters()) params.push_back(p);
  auto opt = MakeOptimizer(config::Optimizer::kAdam, 0.01, params);
  REQUIRE(opt.ok());
  StepOptions so;
  so.direct_builtin_mlp = direct;
  so.before_update = [&] {
    for (const auto& p : params) out.grads.push_back(p.grad().clone());
    return Status::Ok();
  };
  auto st = TrainStep(*student, **opt, b, so);
  REQUIRE(st.ok());
  out.stats = *st;
  for (const auto& p : params) out.params.push_back(p.detach().clone());
  return out;
}

void CheckSameStep(const StepResult& a, const StepResult& b) {
  CHECK(a.stats.loss == doctest::Approx(b.stats.loss).epsilon(1e-6));
  CHECK(a.stats.ce == doctest::Approx(b.stats.ce).epsilon(1e-6));
  CHECK(a.stats.kd == doctest::Approx(b.stats.kd).epsilon(1e-6));
  REQUIRE(a.grads.size() == b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    CAPTURE(i);
    CHECK((a.grads[i] - b.grads[i]).abs().max().item<double>() < 1e-6);
    CHECK((a.params[i] - b.params[i]).abs().max().item<double>() < 1e-6);
  }
}

Batch RandomKdBatch(int64_t n, std::vector<int64_t> shape, int64_t classes) {
  Batch b;
  shape.insert(shape.begin(), n);
  b.inputs = torch::rand(shape);
  b.teacher_logits = torch::randn({n, classes}) * 3;
  b.labels = torch::randint(0, classes, {n}, torch::kInt64);
  b.labels.index_put_({torch::arange(0, n, 4)}, -1);
  return b;
}

TEST_CASE("the direct built-in MLP forward gives the interpreter's loss, gradients and update") {
  torch::manual_seed(3);
  for (std::vector<int64_t> hidden : {std::vector<int64_t>{16}, std::vector<int64_t>{16, 8}}) {
    auto base = BuildModel(ArchSpec{"mlp", {1, 4, 4}, 5, hidden, {}}, 11);
    REQUIRE(base.ok());
    Batch b = RandomKdBatch(32, {1, 4, 4}, 5);
    StepResult direct = OneStep(*base, b, true), interp = OneStep(*base, b, false);
    CHECK(direct.grads.size() == 2 * hidden.size() + 2);
    CheckSameStep(direct, interp);
    // A saved and reloaded model (as Python or a restart sees it) too.
    testing::TempDir dir;
    base->save(dir.str("m.pt"));
    torch::jit::Module loaded = torch::jit::load(dir.str("m.pt"));
    CheckSameStep(OneStep(loaded, b, true), interp);
  }
}

TEST_CASE("a module with the built-in MLP's name and parameters but other code runs its own forward") {
  torch::manual_seed(4);
  auto base = BuildModel(TinyMlp(), 3);
  REQUIRE(base.ok());
  torch::jit::Module other("DistilldMlp");
  for (const auto& p : base->named_parameters()) {
    other.register_parameter(p.name, p.value.detach().clone().set_requires_grad(true), false);
  }
  other.define(
      "def features(self, x):\n"
      "        h = x.float()\n"
      "        h = h.flatten(1)\n"
      "        h = torch.tanh(torch.linear(h, self.fc0_weight, self.fc0_bias))\n"
      "        return h\n\n"
      "def forward(self, x):\n"
      "        return torch.linear(self.features(x), self.out_weight, self.out_bias)\n");
  Batch b = RandomKdBatch(16, {1, 2, 2}, 3);
  StepResult direct = OneStep(other, b, true), interp = OneStep(other, b, false);
  CheckSameStep(direct, interp);
  // And it really differs from the ReLU model (so the check above means something).
  StepResult relu = OneStep(*base, b, false);
  CHECK(relu.stats.loss != doctest::Approx(interp.stats.loss).epsilon(1e-6));
}

TEST_CASE("FusedAdam updates like torch::optim::Adam") {
  torch::manual_seed(5);
  for (double wd : {0.0, 0.01}) {
    CAPTURE(wd);
    // Odd sizes (vector tail), a large one (parallel chunks), a non-contiguous one (op-by-op path).
    std::vector<torch::Tensor> init = {torch::randn({7, 3}), torch::randn({70001}), torch::randn({5}),
                                       torch::randn({6, 4})};
    std::vector<torch::Tensor> pa, pb, start;
    for (size_t i = 0; i < init.size(); ++i) {
      torch::Tensor x = i == 3 ? init[i].t() : init[i];
      start.push_back(x.clone());
      pa.push_back(x.clone().detach().set_requires_grad(true));
      pb.push_back(i == 3 ? init[i].clone().t().detach().set_requires_grad(true)
                          : x.clone().detach().set_requires_grad(true));
    }
    CHECK_FALSE(pb[3].is_contiguous());
    torch::optim::Adam ref(pa, torch::optim::AdamOptions(0.01).weight_decay(wd));
    FusedAdam fused(pb, torch::optim::AdamOptions(0.01).weight_decay(wd));
    for (int step = 0; step < 5; ++step) {
      for (size_t i = 0; i < pa.size(); ++i) {
        torch::Tensor g = torch::randn(pa[i].sizes()) * (step + 1);
        if (i == 2 && step == 1) g.zero_();
        pa[i].mutable_grad() = g.clone();
        pb[i].mutable_grad() = g.clone();
      }
      ref.step();
      fused.step();
    }
    for (size_t i = 0; i < pa.size(); ++i) {
      CAPTURE(i);
      CHECK((pa[i] - pb[i]).abs().max().item<double>() < 1e-6);
      CHECK((pa[i] - start[i]).abs().max().item<double>() > 1e-3);  // it moved
    }
  }
  // amsgrad goes op by op and still matches.
  torch::Tensor a = torch::randn({9}).set_requires_grad(true), b = a.detach().clone().set_requires_grad(true);
  torch::optim::Adam ref(std::vector<torch::Tensor>{a}, torch::optim::AdamOptions(0.1).amsgrad(true));
  FusedAdam fused(std::vector<torch::Tensor>{b}, torch::optim::AdamOptions(0.1).amsgrad(true));
  for (int step = 0; step < 3; ++step) {
    torch::Tensor g = torch::randn({9});
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    ref.step();
    fused.step();
  }
  CHECK((a - b).abs().max().item<double>() < 1e-6);
}

TEST_CASE("samples and tensors convert both ways") {
  torch::Tensor x = torch::arange(8, torch::kFloat32).reshape({2, 1, 2, 2});
  std::vector<storage::Sample> s = {TensorToSample(x[0], 1), TensorToSample(x[1], std::nullopt)};
  CHECK((s[0].shape == std::vector<int64_t>{1, 2, 2}));
  auto b = SamplesToBatch(s);
  REQUIRE(b.ok());
  CHECK(torch::equal(b->inputs, x));
  CHECK(b->labels[0].item<int64_t>() == 1);
  CHECK(b->labels[1].item<int64_t>() == -1);
  CHECK_FALSE(b->teacher_logits.defined());
  s[0].teacher_logits = {1, 2, 3};
  CHECK(SamplesToBatch(s).status().code() == StatusCode::kInvalidArgument);
  s[1].teacher_logits = {3, 2, 1};
  auto b2 = SamplesToBatch(s);
  REQUIRE(b2.ok());
  CHECK(b2->teacher_logits[1][0].item<float>() == 3.0f);
  // Other dtypes are converted to float.
  storage::Sample u8;
  u8.dtype = storage::DType::kUInt8;
  u8.shape = {1, 2, 2};
  u8.data = std::string("\x01\x02\x03\x04", 4);
  auto in = SamplesToInputs(std::vector<storage::Sample>{u8});
  REQUIRE(in.ok());
  CHECK(in->sum().item<float>() == 10.0f);
  storage::Sample other = s[0];
  other.shape = {4};
  CHECK(SamplesToInputs(std::vector<storage::Sample>{s[0], other}).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("evaluation: accuracy, teacher agreement, per class") {
  // A model whose forward is the identity on 3 inputs: prediction = argmax(x).
  torch::jit::Module m("Id");
  m.define("def forward(self, x):\n        return x.flatten(1)\n");
  std::vector<storage::Sample> s;
  auto add = [&](std::vector<float> x, std::optional<int64_t> label, std::vector<float> tl) {
    storage::Sample smp = TensorToSample(torch::tensor(x), label);
    smp.teacher_logits = tl;
    s.push_back(smp);
  };
  add({1, 0, 0}, 0, {1, 0, 0});  // correct, agrees
  add({0, 1, 0}, 0, {0, 1, 0});  // wrong, agrees
  add({0, 0, 1}, 2, {1, 0, 0});  // correct, disagrees
  add({0, 0, 1}, std::nullopt, {});
  auto r = EvaluateSamples(m, s, 2);
  REQUIRE(r.ok());
  CHECK(r->samples == 4);
  CHECK(r->labelled == 3);
  CHECK(r->accuracy() == doctest::Approx(2.0 / 3));
  CHECK(r->with_teacher == 3);
  CHECK(r->agreement() == doctest::Approx(2.0 / 3));
  CHECK(r->per_class[0].accuracy() == doctest::Approx(0.5));
  CHECK(r->per_class[2].accuracy() == doctest::Approx(1.0));
  // The summary a round records carries the same figures.
  const storage::ModelScore score = r->ToScore();
  CHECK(score.samples == 4);
  CHECK(score.labelled == 3);
  CHECK(score.accuracy == doctest::Approx(2.0 / 3));
  CHECK(score.agreement == doctest::Approx(2.0 / 3));
  CHECK(score.per_class.at(0).accuracy == doctest::Approx(0.5));
  CHECK(score.per_class.at(0).samples == 2);
  CHECK_FALSE(score.old_space.has_value());
}

void WriteIdx(const std::string& path, bool gz, const std::string& bytes) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
}

std::string Header(char rank, std::vector<uint32_t> dims) {
  std::string h = {0, 0, 8, rank};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
  }
  return h;
}

TEST_CASE("IDX reader: gzipped and plain files, and bad files") {
  testing::TempDir dir;
  std::string pixels(2 * 3 * 3, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>(i * 10);
  WriteIdx(dir.str("train-images-idx3-ubyte.gz"), true, Header(3, {2, 3, 3}) + pixels);
  WriteIdx(dir.str("train-labels-idx1-ubyte"), false, Header(1, {2}) + std::string("\x07\x02", 2));
  auto d = LoadIdxDataset(dir.str(), "train");
  REQUIRE(d.ok());
  CHECK(d->size() == 2);
  CHECK(d->images.size(1) == 1);
  CHECK(d->images[0][0][0][1].item<float>() == doctest::Approx(10.0 / 255));
  CHECK(d->labels[0].item<int64_t>() == 7);
  auto samples = DatasetToSamples(*d, 0, 5);
  REQUIRE(samples.size() == 2);
  CHECK(*samples[1].label == 2);

  WriteIdx(dir.str("bad.gz"), true, Header(1, {2}) + "\x01\x02");
  CHECK(ReadIdxImages(dir.str("bad.gz")).status().code() == StatusCode::kCorruption);  // rank 1 != 3
  WriteIdx(dir.str("trunc"), false, Header(3, {2, 3, 3}) + "abc");
  auto t = ReadIdxImages(dir.str("trunc"));
  CHECK(t.status().code() == StatusCode::kCorruption);
  CHECK(t.status().message().find("truncated") != std::string::npos);
  WriteIdx(dir.str("huge"), false, Header(3, {2, 100000, 3}));
  CHECK(ReadIdxImages(dir.str("huge")).status().code() == StatusCode::kCorruption);
  CHECK(ReadIdxLabels(dir.str("missing")).status().code() == StatusCode::kIoError);
  WriteIdx(dir.str("t10k-images-idx3-ubyte"), false, Header(3, {2, 3, 3}) + pixels);
  WriteIdx(dir.str("t10k-labels-idx1-ubyte"), false, Header(1, {3}) + "\x01\x02\x03");
  CHECK(LoadIdxDataset(dir.str(), "t10k").status().code() == StatusCode::kCorruption);
}

}  // namespace
}  // namespace distilld::learner
