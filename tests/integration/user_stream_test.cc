// The path a new user takes, in miniature (bench/acceptance runs it at full
// size on Fashion-MNIST): config/distilld.example.yaml with only paths and
// the port changed, a student exported from Python (not a built-in), and a
// class-incremental stream over HTTP, a round asked for after each phase
// while automatic triggers stay on and another client sends inference. Every
// phase's candidate must be promoted by the default gate.
#include "tests/learner/torch_doctest.h"

#include <rapidjson/document.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "daemon/daemon.h"
#include "learner/model/model_io.h"
#include "learner/train_step.h"
#include "tests/integration/http_test_client.h"
#include "tests/integration/rounds_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace distilld::testing {
namespace {

constexpr int kPixels = 784;  // the example config's input_shape [1, 28, 28]
constexpr int kClasses = 10;  // and its classes

// Ten fixed 28x28 patterns; a sample is its class's pattern plus noise.
struct Patterns {
  std::vector<std::vector<float>> mean;
  Patterns() {
    std::mt19937_64 rng(17);
    std::bernoulli_distribution on(0.3);
    for (int c = 0; c < kClasses; ++c) {
      std::vector<float> m(kPixels);
      for (float& v : m) v = on(rng) ? 0.9f : 0.1f;
      mean.push_back(std::move(m));
    }
  }
  void Make(int n, const std::vector<int>& classes, std::mt19937_64& rng, std::vector<float>* x,
            std::vector<int64_t>* y) const {
    std::normal_distribution<float> noise(0.f, 0.25f);
    for (int i = 0; i < n; ++i) {
      const int c = classes[static_cast<size_t>(i) % classes.size()];
      for (int p = 0; p < kPixels; ++p) x->push_back(std::clamp(mean[c][p] + noise(rng), 0.f, 1.f));
      y->push_back(c);
    }
  }
};

// The teacher: nearest pattern, as TorchScript (any module with forward will do).
void SaveTeacher(const Patterns& p, const std::string& path) {
  torch::jit::Module t("PatternTeacher");
  torch::Tensor means = torch::empty({kClasses, kPixels});
  for (int c = 0; c < kClasses; ++c) {
    for (int i = 0; i < kPixels; ++i) means[c][i] = p.mean[c][i];
  }
  t.register_buffer("means", means);
  t.define(
      "def forward(self, x):\n"
      "    d = (x.flatten(1).unsqueeze(1) - self.means.unsqueeze(0)).pow(2).sum(2)\n"
      "    return d * -0.05\n");
  REQUIRE(learner::SaveModelAtomic(t, path).ok());
}

// The student as a user writes it in PyTorch, scripted and saved there; then
// taught classes 0 and 1 (here, so the test needs no data in Python).
void SaveUserStudent(const Patterns& p, const std::string& dir, const std::string& path) {
  const std::string script = dir + "/make_student.py";
  std::ofstream(script) << "import sys, torch, torch.nn as nn\n"
                           "class MLP(nn.Module):\n"
                           "    def __init__(self):\n"
                           "        super().__init__()\n"
                           "        self.fc1 = nn.Linear(784, 32)\n"
                           "        self.fc2 = nn.Linear(32, 10)\n"
                           "    def forward(self, x):\n"
                           "        return self.fc2(torch.relu(self.fc1(x.flatten(1))))\n"
                           "torch.manual_seed(0)\n"
                           "torch.jit.save(torch.jit.script(MLP()), sys.argv[1])\n";
  ProcessResult py = RunCommand("/usr/bin/python3 " + script + " " + dir + "/untrained.pt");
  INFO(py.output);
  REQUIRE_MESSAGE(py.exit_code == 0, "needs Debian's python3-torch (scripts/setup installs it)");
  auto loaded = learner::LoadModel(dir + "/untrained.pt");
  REQUIRE(loaded.ok());
  auto model = learner::CloneForTraining(*loaded);
  REQUIRE(model.ok());
  std::vector<torch::Tensor> params;
  for (const auto& t : model->parameters()) params.push_back(t);
  auto opt = learner::MakeOptimizer(config::Optimizer::kAdam, 0.01, params);
  REQUIRE(opt.ok());
  std::mt19937_64 rng(3);
  learner::StepOptions step;
  step.loss.alpha = 1.0;
  for (int it = 0; it < 60; ++it) {
    std::vector<float> x;
    std::vector<int64_t> y;
    p.Make(32, {0, 1}, rng, &x, &y);
    learner::Batch b;
    b.inputs = torch::from_blob(x.data(), {static_cast<int64_t>(y.size()), 1, 28, 28}).clone();
    b.labels = torch::tensor(y, torch::kInt64);
    REQUIRE(learner::TrainStep(*model, **opt, b, step).ok());
  }
  model->eval();
  REQUIRE(learner::SaveModelAtomic(*model, path).ok());
}

// The shipped example with only what a user must change.
std::string UserConfig(const TempDir& dir) {
  const char* env = std::getenv("DISTILLD_SOURCE_DIR");  // set by ctest
  const std::string src = env != nullptr ? env : DISTILLD_SOURCE_DIR_DEFAULT;
  std::ifstream in(src + "/config/distilld.example.yaml");
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  std::string yaml = ss.str();
  auto replace = [&](const std::string& from, const std::string& to) {
    const size_t at = yaml.find(from);
    REQUIRE_MESSAGE(at != std::string::npos, from);
    REQUIRE_MESSAGE(yaml.find(from, at + 1) == std::string::npos, from);
    yaml.replace(at, from.size(), to);
  };
  replace("  listen: \"127.0.0.1:8080\"", "  listen: \"127.0.0.1:0\"");
  replace("  state_dir: \"./state\"", "  state_dir: \"" + dir.str("state") + "\"");
  replace("  teacher: \"\"", "  teacher: \"" + dir.str("teacher.pt") + "\"");
  replace("  student: \"\"", "  student: \"" + dir.str("student.pt") + "\"");
  return yaml;
}

std::string Body(const std::vector<float>& x, const std::vector<int64_t>& y) {
  std::string b = R"({"inputs":[{"name":"input","datatype":"FP32","shape":[)" + std::to_string(y.size()) +
                  R"(,1,28,28],"data":[)";
  for (size_t i = 0; i < x.size(); ++i) {
    if (i) b += ',';
    b += std::to_string(x[i]);
  }
  b += R"(]},{"name":"label","datatype":"INT64","shape":[)" + std::to_string(y.size()) + R"(],"data":[)";
  for (size_t i = 0; i < y.size(); ++i) b += (i ? "," : "") + std::to_string(y[i]);
  return b + "]}]}";
}

std::string InferBody(const float* x, int n) {
  std::string b = R"({"inputs":[{"name":"input","datatype":"FP32","shape":[)" + std::to_string(n) +
                  R"(,1,28,28],"data":[)";
  for (int i = 0; i < n * kPixels; ++i) b += (i ? "," : "") + std::to_string(x[i]);
  return b + R"(]}],"outputs":[{"name":"label"}]})";
}

// Served accuracy on fresh samples of `classes`.
double Accuracy(TcpClient& c, const Patterns& p, const std::vector<int>& classes) {
  std::mt19937_64 rng(99);
  std::vector<float> x;
  std::vector<int64_t> y;
  p.Make(20 * static_cast<int>(classes.size()), classes, rng, &x, &y);
  Reply r = c.Post("/v2/models/fashion/infer", InferBody(x.data(), static_cast<int>(y.size())));
  REQUIRE(r.status == 200);
  rapidjson::Document d = Parse(r.body);
  const auto& labels = d["outputs"][0]["data"];
  int correct = 0;
  for (size_t i = 0; i < y.size(); ++i) correct += labels[static_cast<rapidjson::SizeType>(i)].GetInt64() == y[i];
  return static_cast<double>(correct) / static_cast<double>(y.size());
}

TEST_CASE("a user's Python student learns a class-incremental stream over HTTP with the example config's defaults") {
  TempDir dir;
  Patterns patterns;
  SaveTeacher(patterns, dir.str("teacher.pt"));
  SaveUserStudent(patterns, dir.str(), dir.str("student.pt"));
  config::LoadResult cfg = config::ParseConfig(UserConfig(dir));
  for (const auto& e : cfg.errors) INFO(e.ToString());
  REQUIRE(cfg.errors.empty());
  auto d = daemon::Daemon::Create(cfg.config);
  Status started = d->Start();
  INFO(started.ToString());
  REQUIRE(started.ok());
  REQUIRE(d->distiller() != nullptr);
  TcpClient c(Loopback(d->tcp_port()));

  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, failed{0};
  std::thread load([&] {  // well below learner.yield_above_rps
    TcpClient lc(Loopback(d->tcp_port()));
    std::vector<float> x(kPixels, 0.3f);
    while (!stop) {
      Reply r = lc.Post("/v2/models/fashion/infer", InferBody(x.data(), 1));
      ++answered;
      if (r.status != 200) ++failed;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  const std::vector<std::vector<int>> phases = {{0, 1}, {2, 3}, {4, 5}};
  std::vector<int> seen;
  std::mt19937_64 rng(7);
  for (const auto& phase : phases) {
    CAPTURE(phase[0]);
    for (int batch = 0; batch < 6; ++batch) {  // 600 samples, 300 a class
      std::vector<float> x;
      std::vector<int64_t> y;
      patterns.Make(100, phase, rng, &x, &y);
      REQUIRE(c.Post("/v1/samples", Body(x, y)).status == 200);
    }
    Reply asked = c.Post("/v1/learner/rounds", "{}");
    REQUIRE((asked.status == 202 || asked.status == 409));
    rapidjson::Document a = Parse(asked.body);
    REQUIRE(a.HasMember("round_id"));  // a 409 names the round that took the samples
    const int64_t id = a["round_id"].GetInt64();
    rapidjson::Document r = WaitRound(c, id, 2400);
    const std::string outcome = r["outcome"].GetString();
    const std::string reason = r["reason"].GetString();
    INFO("round ", id, ": ", outcome, " ", reason);
    CHECK(outcome == "promoted");
    // Every round of the run (automatic ones too) was promoted.
    const auto all = d->registry()->ListRounds(100);
    REQUIRE(all.ok());
    for (const auto& r : *all) {
      INFO("round ", r.id, " (", r.trigger, "): ", r.reason);
      CHECK(r.outcome == storage::RoundOutcome::kPromoted);
    }
    seen.insert(seen.end(), phase.begin(), phase.end());
    CHECK(Accuracy(c, patterns, phase) > 0.8);  // the new classes are learned
    CHECK(Accuracy(c, patterns, seen) > 0.8);   // the old ones are kept
  }
  // The first round judged the user's student in the label space it
  // evidently has; later ones in the recorded one.
  auto rounds = d->registry()->ListRounds(100).value();
  REQUIRE(!rounds.empty());
  REQUIRE(rounds.back().evaluation.has_value());
  REQUIRE(rounds.front().evaluation.has_value());
  CHECK(rounds.back().evaluation->active_label_space_source == storage::LabelSpaceSource::kInferred);
  CHECK(rounds.front().evaluation->active_label_space_source == storage::LabelSpaceSource::kRecorded);
  CHECK(rounds.front().evaluation->label_space == std::set<int64_t>{0, 1, 2, 3, 4, 5});
  // The user's student was recycled through its parameter list (fc1's units
  // left dead by its training on two classes), not refused as "not built-in".
  int64_t recycled = 0;
  for (const auto& r : rounds) {
    REQUIRE(r.loss.has_value());
    recycled += r.loss->recycled_units;
  }
  CHECK(recycled > 0);
  stop = true;
  load.join();
  d->Shutdown();
  CHECK(answered > 0);
  CHECK(failed == 0);
}

}  // namespace
}  // namespace distilld::testing
