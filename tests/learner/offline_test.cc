#include "tests/learner/torch_doctest.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "learner/model/model_io.h"
#include "learner/offline.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

std::string Header(char rank, std::vector<uint32_t> dims) {
  std::string h = {0, 0, 8, rank};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
  }
  return h;
}

// Tiny IDX dataset of 8x8 images: class 0 is bright on the left half, class 1
// on the right, class 2 on the top rows; plus noise. Plain (not gzipped).
void WriteSplit(const std::string& dir, const std::string& split, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string pixels, labels;
  for (int i = 0; i < n; ++i) {
    int c = static_cast<int>(rng() % 3);
    labels.push_back(static_cast<char>(c));
    for (int y = 0; y < 8; ++y) {
      for (int x = 0; x < 8; ++x) {
        bool on = (c == 0 && x < 4) || (c == 1 && x >= 4) || (c == 2 && y < 3);
        int v = (on ? 150 : 30) + static_cast<int>(rng() % 90);
        pixels.push_back(static_cast<char>(v));
      }
    }
  }
  std::ofstream(dir + "/" + split + "-images-idx3-ubyte", std::ios::binary)
      << Header(3, {static_cast<uint32_t>(n), 8, 8}) << pixels;
  std::ofstream(dir + "/" + split + "-labels-idx1-ubyte", std::ios::binary)
      << Header(1, {static_cast<uint32_t>(n)}) << labels;
}

TEST_CASE("train a teacher, then distill a smaller student in three stages") {
  testing::TempDir dir;
  WriteSplit(dir.str(), "train", 300, 1);
  WriteSplit(dir.str(), "t10k", 150, 2);

  TrainTeacherOptions t;
  t.data_dir = dir.str();
  t.output_path = dir.str("teacher.pt");
  t.arch = {"cnn", {1, 8, 8}, 3, {32}, {8, 8}};
  t.epochs = 3;
  t.batch_size = 16;
  t.threads = 1;
  int calls = 0;
  t.progress = [&](const ProgressEvent& e) {
    ++calls;
    CHECK(e.stage == "teacher");
    CHECK(e.step <= e.total);
  };
  auto tr = TrainTeacher(t);
  REQUIRE(tr.ok());
  CHECK(calls > 0);
  CHECK(tr->test_accuracy > 0.9);
  CHECK(tr->params > 0);
  CHECK(tr->file_bytes == static_cast<int64_t>(std::filesystem::file_size(t.output_path)));

  DistillOptions d;
  d.teacher_path = t.output_path;
  d.output_path = dir.str("student.pt");
  d.data_dir = dir.str();
  d.student_arch = {"mlp", {1, 8, 8}, 3, {6}, {}};
  d.batch_size = 16;
  d.threads = 1;
  d.learning_rate = 3e-3;
  auto rep = DistillOffline(d);
  REQUIRE(rep.ok());
  INFO(rep->ToText());
  CHECK(rep->feature_stage_used);
  REQUIRE(rep->stage_accuracy.size() == 3);
  CHECK(rep->teacher_accuracy == doctest::Approx(tr->test_accuracy));
  CHECK(rep->student_accuracy > 0.85);
  CHECK(rep->student_params < rep->teacher_params);
  CHECK(rep->student_bytes > 0);
  CHECK(rep->ToJson().find("\"stage_accuracy\":[") != std::string::npos);
  auto loaded = LoadModel(d.output_path, rep->sha256);
  REQUIRE(loaded.ok());

  DistillOptions base = d;
  base.labels_only = true;
  base.output_path = dir.str("baseline.pt");
  auto b = DistillOffline(base);
  REQUIRE(b.ok());
  CHECK(b->stage_accuracy.size() == 2);
  CHECK_FALSE(b->feature_stage_used);
}

TEST_CASE("cancel and bad inputs write nothing") {
  testing::TempDir dir;
  WriteSplit(dir.str(), "train", 50, 3);
  WriteSplit(dir.str(), "t10k", 20, 4);
  std::atomic<bool> cancel{true};
  TrainTeacherOptions t;
  t.data_dir = dir.str();
  t.output_path = dir.str("teacher.pt");
  t.arch = {"mlp", {1, 8, 8}, 3, {8}, {}};
  t.cancel = &cancel;
  CHECK(TrainTeacher(t).status().code() == StatusCode::kCancelled);
  CHECK_FALSE(std::filesystem::exists(t.output_path));
  t.data_dir = dir.str("nowhere");
  t.cancel = nullptr;
  CHECK(TrainTeacher(t).status().code() == StatusCode::kIoError);
  DistillOptions d;
  d.output_path = dir.str("s.pt");
  CHECK(DistillOffline(d).status().code() == StatusCode::kInvalidArgument);
  d.teacher_path = dir.str("missing.pt");
  d.data_dir = dir.str();
  CHECK_FALSE(DistillOffline(d).ok());
  CHECK_FALSE(std::filesystem::exists(d.output_path));
}

}  // namespace
}  // namespace distilld::learner
