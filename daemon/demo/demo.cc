#include "daemon/demo/demo.h"

#include <rapidjson/document.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "daemon/daemon.h"
#include "daemon/demo/http_client.h"
#include "daemon/demo/kserve_client.h"
#include "daemon/demo/traffic.h"
#include "learner/evaluate.h"
#include "learner/idx_dataset.h"
#include "learner/kd_loss.h"
#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/offline.h"
#include "learner/train_step.h"
#include "learner/version_store.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon {
namespace {

namespace fs = std::filesystem;
using Clk = std::chrono::steady_clock;

constexpr int kClasses = 10;
// learner.min_samples in the demo config: fewer new samples wait for more.
constexpr uint64_t kSettledSamples = 200;
// Class-incremental phases: the first trains the initial student offline,
// the rest are streamed to the daemon.
const std::vector<std::vector<int64_t>> kPhases = {{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}};

std::atomic<bool> g_interrupted{false};
void OnSignal(int) { g_interrupted = true; }

double Seconds(Clk::time_point since) { return std::chrono::duration<double>(Clk::now() - since).count(); }

// Indices of training samples whose label is in `classes`, shuffled.
std::vector<int64_t> PhaseIndices(const torch::Tensor& labels, const std::vector<int64_t>& classes,
                                  int64_t limit, std::mt19937_64& rng) {
  std::vector<int64_t> idx;
  auto l = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < labels.size(0); ++i) {
    if (std::find(classes.begin(), classes.end(), l[i]) != classes.end()) idx.push_back(i);
  }
  std::shuffle(idx.begin(), idx.end(), rng);
  if (limit > 0 && static_cast<int64_t>(idx.size()) > limit) idx.resize(limit);
  return idx;
}

// Distills the first student on the first phase's classes: KD from the
// teacher's logits plus CE, a few epochs. Returns the saved file's path.
Result<std::string> TrainInitialStudent(const learner::Dataset& train, torch::jit::Module& teacher,
                                        const std::vector<int64_t>& idx, const std::string& path) {
  learner::ArchSpec arch;
  arch.kind = "mlp";
  arch.hidden = {128};
  ASSIGN_OR_RETURN(torch::jit::Module built, learner::BuildModel(arch, 7));
  ASSIGN_OR_RETURN(torch::jit::Module student, learner::CloneForTraining(built));
  torch::Tensor index = torch::tensor(idx, torch::kInt64);
  torch::Tensor x = train.images.index_select(0, index);
  torch::Tensor y = train.labels.index_select(0, index);
  ASSIGN_OR_RETURN(torch::Tensor t, learner::ForwardInBatches(teacher, x, 512));
  std::vector<torch::Tensor> params;
  for (const auto& p : student.parameters()) params.push_back(p);
  ASSIGN_OR_RETURN(auto optimizer, learner::MakeOptimizer(config::Optimizer::kAdam, 2e-3, params));
  learner::StepOptions step;
  step.loss.alpha = 0.5;
  step.loss.temperature = 4.0;
  const int64_t n = x.size(0), bs = 64;
  for (int epoch = 0; epoch < 3; ++epoch) {
    torch::Tensor perm = torch::randperm(n, torch::kInt64);
    for (int64_t b = 0; b + bs <= n; b += bs) {
      torch::Tensor sel = perm.slice(0, b, b + bs);
      learner::Batch batch;
      batch.inputs = x.index_select(0, sel);
      batch.labels = y.index_select(0, sel);
      batch.teacher_logits = t.index_select(0, sel);
      ASSIGN_OR_RETURN(learner::StepStats s, learner::TrainStep(student, *optimizer, batch, step));
      (void)s;
    }
  }
  student.eval();
  ASSIGN_OR_RETURN(learner::SavedModel saved, learner::SaveModelAtomic(student, path));
  return saved.path;
}

std::string DemoYaml(const DemoOptions& o, const std::string& state, const std::string& teacher,
                     const std::string& student) {
  std::ostringstream y;
  y << "# Written by `distilld demo`; `distilld serve --config` this file to serve the demo state again.\n"
    << "server:\n  listen: \"" << o.listen << "\"\n  io_threads: 1\n"
    << "model:\n  name: fashion\n  input_shape: [1, 28, 28]\n  classes: 10\n"
    << "  class_names: [T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot]\n"
    << "  teacher: \"" << teacher << "\"\n  student: \"" << student << "\"\n"
    << "  architecture:\n    kind: mlp\n    hidden: [128]\n"
    << "batching:\n  max_batch_size: 32\n  max_queue_delay_us: 300\n  inference_threads: 1\n"
    << "storage:\n  state_dir: \"" << state << "\"\n"
    << "replay:\n  holdout_fraction: 0.1\n"
    << "learner:\n  trigger_count: 3000\n  trigger_interval_s: 5\n  min_samples: " << kSettledSamples << "\n  epochs: 2\n"
    << "  batch_size: 64\n  learning_rate: 0.001\n  alpha: 0.5\n  temperature: 4.0\n"
    << "  threads: 1\n  nice: 10\n"
    << "capture:\n  fraction: 0.02\n"
    << "logging:\n  level: warning\n";
  return y.str();
}

struct LearnerView {
  std::string state;
  int64_t round = 0, step = 0, total = 0, active = 0;
  uint64_t waiting = 0;
  bool ok = false;
};

LearnerView FetchLearner(HttpClient& c) {
  LearnerView v;
  Result<HttpClientResponse> r = c.Get("/v1/learner");
  if (!r.ok() || r->status != 200) return v;
  rapidjson::Document d;
  d.Parse(r->body.c_str());
  if (d.HasParseError() || !d.IsObject()) return v;
  v.state = d["state"].GetString();
  v.round = d["round"]["id"].GetInt64();
  v.step = d["round"]["step"].GetInt64();
  v.total = d["round"]["total_steps"].GetInt64();
  v.active = d["active_version"].GetInt64();
  v.waiting = d["samples_waiting"].IsUint64() ? d["samples_waiting"].GetUint64() : 0;
  v.ok = true;
  return v;
}

struct VersionView {
  int64_t id = 0;
  std::string status, note;
  double holdout_acc = -1;
};

std::vector<VersionView> FetchVersions(HttpClient& c) {
  std::vector<VersionView> out;
  Result<HttpClientResponse> r = c.Get("/v1/models/fashion/versions");
  if (!r.ok() || r->status != 200) return out;
  rapidjson::Document d;
  d.Parse(r->body.c_str());
  if (d.HasParseError() || !d.IsObject() || !d["versions"].IsArray()) return out;
  for (const auto& v : d["versions"].GetArray()) {
    VersionView vv;
    vv.id = v["id"].GetInt64();
    vv.status = v["status"].GetString();
    vv.note = v["note"].GetString();
    const auto& m = v["metrics"];
    if (m.IsObject() && m.HasMember("candidate") && m["candidate"].IsObject() &&
        m["candidate"]["labelled"].GetInt64() > 0) {
      vv.holdout_acc = m["candidate"]["accuracy"].GetDouble();
    }
    out.push_back(vv);
  }
  return out;
}

// Accuracy of a model on the test images of `classes` (all if empty).
double TestAccuracy(torch::jit::Module& m, const learner::Dataset& test, const std::vector<int64_t>& classes) {
  torch::NoGradGuard ng;
  Result<torch::Tensor> logits = learner::ForwardInBatches(m, test.images, 1000);
  if (!logits.ok()) return 0;
  torch::Tensor pred = logits->argmax(1);
  torch::Tensor mask = torch::zeros_like(test.labels, torch::kBool);
  if (classes.empty()) {
    mask.fill_(true);
  } else {
    for (int64_t c : classes) mask |= test.labels.eq(c);
  }
  torch::Tensor correct = pred.eq(test.labels) & mask;
  return correct.sum().item<double>() / std::max<double>(1.0, mask.sum().item<double>());
}

std::string Bar(double frac, int width) {
  int filled = static_cast<int>(std::round(std::clamp(frac, 0.0, 1.0) * width));
  return std::string(filled, '#') + std::string(width - filled, '.');
}

}  // namespace

int RunDemo(const DemoOptions& o) {
  const auto t_start = Clk::now();
  std::cout.setf(std::ios::unitbuf);  // progress must show when piped to a file too
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  at::set_num_threads(o.threads);
  std::error_code ec;
  fs::create_directories(o.state_dir, ec);
  const std::string state = fs::absolute(o.state_dir).lexically_normal().string();
  std::cout << "distilld demo: state in " << state << "\n";

  Result<learner::Dataset> train = learner::LoadIdxDataset(o.data_dir, "train");
  Result<learner::Dataset> test = learner::LoadIdxDataset(o.data_dir, "t10k");
  if (!train.ok() || !test.ok()) {
    std::cerr << "cannot read Fashion-MNIST from " << o.data_dir << ": "
              << (train.ok() ? test.status() : train.status()).ToString()
              << "\n(install the Debian package dataset-fashion-mnist: scripts/setup does)\n";
    return 1;
  }
  std::cout << "data: " << train->size() << " training and " << test->size() << " test images from "
            << o.data_dir << "\n";

  // 1. The teacher, trained once and cached.
  const std::string teacher_path = state + "/teacher.pt";
  if (!fs::exists(teacher_path)) {
    std::cout << "[1/4] training the teacher (a small CNN, " << o.teacher_epochs
              << " epochs; cached for later runs)...\n";
    learner::TrainTeacherOptions t;
    t.data_dir = o.data_dir;
    t.output_path = teacher_path;
    t.epochs = o.teacher_epochs;
    t.threads = o.threads;
    t.progress = learner::TerminalProgress();
    Result<learner::TrainReport> r = learner::TrainTeacher(t);
    if (!r.ok()) {
      std::cerr << "teacher training failed: " << r.status().ToString() << "\n";
      return 1;
    }
    std::cout << "      teacher: " << r->params << " parameters, test accuracy " << std::fixed
              << std::setprecision(2) << 100 * r->test_accuracy << "% (" << std::setprecision(0) << r->seconds
              << " s)\n";
  } else {
    std::cout << "[1/4] teacher: reusing " << teacher_path << "\n";
  }
  Result<torch::jit::Module> teacher = learner::LoadModel(teacher_path);
  if (!teacher.ok()) {
    std::cerr << teacher.status().ToString() << "\n";
    return 1;
  }
  const double teacher_acc = TestAccuracy(*teacher, *test, {});

  // 2. A fresh daemon state (the teacher stays) and the first student.
  for (const char* stale : {"samples", "models", "registry.sqlite", "registry.sqlite-wal", "registry.sqlite-shm"}) {
    fs::remove_all(state + "/" + stale, ec);
  }
  std::mt19937_64 rng(2026);
  std::vector<std::vector<int64_t>> phase_idx;
  for (const auto& classes : kPhases) phase_idx.push_back(PhaseIndices(train->labels, classes, o.phase_limit, rng));
  std::cout << "[2/4] distilling the first student (MLP 784-128-10) on classes 0 and 1 ("
            << phase_idx[0].size() << " images)...\n";
  const std::string student_path = state + "/initial-student.pt";
  Result<std::string> student = TrainInitialStudent(*train, *teacher, phase_idx[0], student_path);
  if (!student.ok()) {
    std::cerr << "initial student failed: " << student.status().ToString() << "\n";
    return 1;
  }

  // 3. The daemon, configured like any other deployment.
  const std::string yaml = DemoYaml(o, state, teacher_path, student_path);
  std::ofstream(state + "/demo.yaml") << yaml;
  config::LoadResult cfg = config::ParseConfig(yaml);
  if (!cfg.ok()) {
    for (const auto& e : cfg.errors) std::cerr << "demo config: " << e.ToString() << "\n";
    return 1;
  }
  log::SetLevel(log::Level::kWarning);
  std::unique_ptr<Daemon> daemon = Daemon::Create(cfg.config);
  Status started = daemon->Start();
  if (!started.ok()) {
    std::cerr << "daemon start-up failed: " << started.ToString() << "\n";
    return 1;
  }
  const uint16_t port = daemon->tcp_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  std::cout << "[3/4] daemon serving on " << base << "  (dashboard: " << base << "/)\n";

  // 4. Stream phases 2..5 while a second client sends inference traffic.
  std::cout << "[4/4] streaming " << kPhases.size() - 1 << " class-incremental phases at " << o.rate
            << " samples/s (" << static_cast<int>(100 * o.unlabelled) << "% unlabelled), inference at "
            << o.infer_rate << " req/s\n\n";
  InferenceTraffic traffic("127.0.0.1", port, "fashion", "input", test->images, test->labels, o.infer_rate,
                           kClasses);
  traffic.Start();
  auto client = HttpClient::Create("127.0.0.1", port);
  auto monitor = HttpClient::Create("127.0.0.1", port);

  std::map<int64_t, int> version_phase;  // version -> phases seen when it appeared
  std::set<int64_t> reported;
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  auto report = [&](int phase, size_t sent, size_t total) {
    for (const VersionView& v : FetchVersions(*monitor)) {
      if (reported.count(v.id) != 0 || v.status == "candidate") continue;
      reported.insert(v.id);
      version_phase[v.id] = phase;
      if (tty) std::cout << "\r\033[K";
      std::cout << "  v" << v.id << " " << std::left << std::setw(8) << v.status << std::right;
      if (v.holdout_acc >= 0) std::cout << " held-out accuracy " << std::fixed << std::setprecision(2) << 100 * v.holdout_acc << "%";
      if (!v.note.empty()) std::cout << "  (" << v.note << ")";
      std::cout << "\n";
    }
    LearnerView l = FetchLearner(*monitor);
    TrafficSnapshot s = traffic.Snapshot();
    std::ostringstream line;
    line << "phase " << phase << "/" << kPhases.size() - 1 << " [" << Bar(total ? double(sent) / total : 1, 20)
         << "] " << sent << "/" << total << " | learner " << l.state;
    if (l.state == "training" && l.total > 0) line << " r" << l.round << " " << l.step << "/" << l.total;
    line << " | active v" << l.active << " | " << std::fixed << std::setprecision(0) << s.requests_per_s
         << " req/s p99 " << std::setprecision(1) << s.p99_ms << " ms | errors " << s.failed;
    if (tty) {
      std::cout << "\r\033[K" << line.str() << std::flush;
    } else {
      std::cout << line.str() << "\n";
    }
  };

  report(0, 0, 0);  // the first student belongs to phase 0 (classes 0 and 1)
  if (tty) std::cout << "\n";
  const std::vector<int64_t> shape = {1, 28, 28};
  const int64_t per = 28 * 28;
  const int64_t batch = 64;
  std::bernoulli_distribution unlabelled(o.unlabelled);
  const torch::Tensor images = train->images.contiguous();
  const float* pixels = images.data_ptr<float>();
  auto train_labels = train->labels.accessor<int64_t, 1>();
  uint64_t stream_failures = 0;
  for (size_t p = 1; p < kPhases.size() && !g_interrupted; ++p) {
    const auto& idx = phase_idx[p];
    auto next = Clk::now();
    auto last_report = Clk::now();
    for (size_t b = 0; b < idx.size() && !g_interrupted; b += batch) {
      const size_t n = std::min<size_t>(batch, idx.size() - b);
      std::vector<float> data(n * per);
      std::vector<int64_t> labels(n);
      for (size_t i = 0; i < n; ++i) {
        const int64_t k = idx[b + i];
        std::memcpy(data.data() + i * per, pixels + k * per, per * sizeof(float));
        labels[i] = unlabelled(rng) ? -1 : train_labels[k];
      }
      EncodedRequest req = EncodeSamplesRequest(data.data(), labels.data(), static_cast<int64_t>(n), shape);
      Result<HttpClientResponse> res = client->Post("/v1/samples", std::move(req.body), req.headers);
      if (!res.ok() || res->status != 200) {
        ++stream_failures;
        std::cerr << "\nPOST /v1/samples failed: " << (res.ok() ? res->body : res.status().ToString()) << "\n";
      }
      next += std::chrono::duration_cast<Clk::duration>(std::chrono::duration<double>(n / o.rate));
      std::this_thread::sleep_until(next);
      if (Seconds(last_report) > 0.5) {
        report(static_cast<int>(p), b + n, idx.size());
        last_report = Clk::now();
      }
    }
    // Let the learner take in the phase before the next one starts: ask for
    // a round now (409 while a count-triggered one runs is fine), then wait
    // until it is idle with fewer new samples than a timed round needs.
    // Captured inference traffic keeps adding a few, so "none" never comes.
    const auto wait_start = Clk::now();
    (void)client->Post("/v1/learner/rounds", "{}");
    while (!g_interrupted && Seconds(wait_start) < 300) {
      LearnerView l = FetchLearner(*monitor);
      if (l.ok && l.state == "idle" && l.waiting < kSettledSamples) break;
      report(static_cast<int>(p), idx.size(), idx.size());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    report(static_cast<int>(p), idx.size(), idx.size());
    if (tty) std::cout << "\n";
  }
  traffic.Stop();
  TrafficSnapshot final_traffic = traffic.Snapshot();
  if (tty) std::cout << "\n";

  // Summary: every version evaluated on the test set.
  std::cout << "\nSummary (test set; teacher accuracy " << std::fixed << std::setprecision(2) << 100 * teacher_acc
            << "%)\n";
  std::cout << "  version  status    phase  classes seen  acc(seen)  acc(all 10)  held-out\n";
  std::ostringstream json;
  json << "{\"teacher_accuracy\":" << teacher_acc << ",\"versions\":[";
  bool first = true;
  for (const VersionView& v : FetchVersions(*monitor)) {
    const int phase = version_phase.count(v.id) ? version_phase[v.id] : 0;
    std::vector<int64_t> seen;
    for (int q = 0; q <= phase; ++q) seen.insert(seen.end(), kPhases[q].begin(), kPhases[q].end());
    Result<torch::jit::Module> m = learner::LoadModel(state + "/" + learner::VersionStore::RelativePath(v.id));
    if (!m.ok()) continue;
    const double acc_seen = TestAccuracy(*m, *test, seen);
    const double acc_all = TestAccuracy(*m, *test, {});
    std::cout << "  v" << std::left << std::setw(7) << v.id << std::setw(10) << v.status << std::right
              << std::setw(5) << phase << std::setw(14) << seen.size() << std::setw(10) << std::setprecision(2)
              << 100 * acc_seen << "%" << std::setw(12) << 100 * acc_all << "%";
    if (v.holdout_acc >= 0) std::cout << std::setw(9) << 100 * v.holdout_acc << "%";
    std::cout << "\n";
    json << (first ? "" : ",") << "{\"id\":" << v.id << ",\"status\":\"" << v.status << "\",\"phase\":" << phase
         << ",\"acc_seen\":" << acc_seen << ",\"acc_all\":" << acc_all << "}";
    first = false;
  }
  json << "],\"inference_requests\":" << final_traffic.requests << ",\"failed_requests\":" << final_traffic.failed
       << ",\"stream_failures\":" << stream_failures << ",\"seconds\":" << Seconds(t_start) << "}\n";
  std::ofstream(state + "/demo-summary.json") << json.str();
  std::cout << "\ninference requests: " << final_traffic.requests << ", failed: " << final_traffic.failed
            << "; sample batches failed: " << stream_failures << "; " << std::setprecision(0) << Seconds(t_start)
            << " s in all\n";
  if (final_traffic.failed > 0) std::cout << "last error: " << final_traffic.last_error << "\n";
  std::cout << "summary written to " << state << "/demo-summary.json\n";

  const int code = (final_traffic.failed == 0 && stream_failures == 0 && !g_interrupted) ? 0 : 1;
  if (!o.exit_when_done && !g_interrupted) {
    std::cout << "\nThe daemon keeps serving: dashboard " << base << "/  (Ctrl-C stops it)\n" << std::flush;
    while (!g_interrupted) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  daemon->Shutdown();
  return code;
}

}  // namespace distilld::daemon
