#include "tests/learner/torch_doctest.h"
#include <zlib.h>

#include <fstream>

#include "learner/evaluate.h"
#include "learner/idx_dataset.h"
#include "learner/model_builder.h"
#include "learner/train_step.h"
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
  auto opt = MakeOptimizer("adam", 0.05, params);
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

TEST_CASE("a diverging step aborts before the update") {
  auto m = BuildModel(TinyMlp(), 3);
  REQUIRE(m.ok());
  auto student = CloneForTraining(*m);
  REQUIRE(student.ok());
  std::vector<torch::Tensor> params;
  for (const auto& p : student->parameters()) params.push_back(p);
  auto opt = MakeOptimizer("sgd", 1e9, params);
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
  CHECK(MakeOptimizer("rmsprop", 0.1, params).status().code() == StatusCode::kInvalidArgument);
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
  auto opt = MakeOptimizer("adam", 0.01, params);
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
  CHECK(r->ToJson().find("\"accuracy\":0.666667") != std::string::npos);
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
