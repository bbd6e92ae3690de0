#include "tests/integration/crash_loop.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/train_step.h"
#include "learner/version_names.h"
#include "storage/registry.h"
#include "storage/sample_store.h"
#include "tests/integration/child_daemon.h"
#include "tests/integration/http_test_client.h"

namespace distilld::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kClasses = 3;
constexpr int kPixels = 16;  // 1x4x4

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Three noisy 1x4x4 patterns. Values are multiples of 1/64, so they print
// exactly and the stored bytes can be compared bit for bit.
struct Task {
  std::vector<std::vector<float>> means;
  explicit Task(uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (int c = 0; c < kClasses; ++c) {
      std::vector<float> m(kPixels);
      for (float& v : m) v = rng() % 2 ? 0.25f : 0.75f;
      means.push_back(m);
    }
  }
  std::vector<float> Draw(int cls, std::mt19937_64& rng) const {
    std::normal_distribution<float> noise(0.f, 0.12f);
    std::vector<float> x(kPixels);
    for (int p = 0; p < kPixels; ++p) {
      x[p] = std::round(std::clamp(means[cls][p] + noise(rng), 0.f, 1.f) * 64.f) / 64.f;
    }
    return x;
  }
};

Status TrainTeacher(const Task& task, const std::string& path, uint64_t seed) {
  learner::ArchSpec arch{"mlp", {1, 4, 4}, kClasses, {32}, {}};
  ASSIGN_OR_RETURN(torch::jit::Module built, learner::BuildModel(arch, seed));
  ASSIGN_OR_RETURN(torch::jit::Module model, learner::CloneForTraining(built));
  std::vector<torch::Tensor> params;
  for (const auto& p : model.parameters()) params.push_back(p);
  ASSIGN_OR_RETURN(auto opt, learner::MakeOptimizer(config::Optimizer::kAdam, 0.02, params));
  std::mt19937_64 rng(seed);
  learner::StepOptions step;
  step.loss.alpha = 1.0;
  for (int it = 0; it < 150; ++it) {
    std::vector<float> x;
    std::vector<int64_t> y;
    for (int c = 0; c < kClasses; ++c) {
      for (int i = 0; i < 16; ++i) {
        std::vector<float> s = task.Draw(c, rng);
        x.insert(x.end(), s.begin(), s.end());
        y.push_back(c);
      }
    }
    learner::Batch b;
    b.inputs = torch::from_blob(x.data(), {static_cast<int64_t>(y.size()), 1, 4, 4}).clone();
    b.labels = torch::tensor(y, torch::kInt64);
    ASSIGN_OR_RETURN(auto stepped, learner::TrainStep(model, *opt, b, step));
    (void)stepped;
  }
  model.eval();
  ASSIGN_OR_RETURN(auto saved, learner::SaveModelAtomic(model, path));
  (void)saved;
  return Status::Ok();
}

std::string Num(float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6f", v);
  return buf;
}

struct Expected {
  std::string data;  // the float bytes as stored
  std::optional<int64_t> label;
};

// The end of a daemon log, for a failure message.
std::string Tail(const std::string& text) { return text.size() > 3000 ? "..." + text.substr(text.size() - 3000) : text; }

rapidjson::Document ParseJson(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.c_str());
  return d;
}

class Loop {
 public:
  explicit Loop(const CrashLoopOptions& o) : o_(o), task_(o.seed), rng_(o.seed) {}

  Result<CrashLoopReport> Run() {
    RETURN_IF_ERROR(SetUp());
    for (int cycle = 0; cycle < o_.cycles; ++cycle) {
      RETURN_IF_ERROR(Cycle(cycle));
      r_.cycles = cycle + 1;
    }
    // The state the last kill left, checked as every other one.
    RETURN_IF_ERROR(CheckAfterKill(o_.cycles, /*then_stop=*/true));
    return r_;
  }

 private:
  std::string Path(const std::string& name) const { return (fs::path(o_.work_dir) / name).string(); }
  std::string State(const std::string& name = "") const { return (fs::path(Path("state")) / name).string(); }

  void Fail(int cycle, const std::string& what) {
    if (r_.failures.size() < 50) r_.failures.push_back("cycle " + std::to_string(cycle) + ": " + what);
  }

  Status SetUp() {
    std::error_code ec;
    fs::create_directories(o_.work_dir, ec);
    if (ec) return Status::IoError("creating " + o_.work_dir + ": " + ec.message());
    if (!fs::exists(o_.distilld)) return Status::NotFound("no distilld binary at " + o_.distilld);
    RETURN_IF_ERROR(TrainTeacher(task_, Path("teacher.pt"), o_.seed + 1));
    std::ofstream(Path("distilld.yaml"))
        << "server:\n  listen: \"127.0.0.1:0\"\n"
        << "model:\n  input_shape: [1, 4, 4]\n  classes: 3\n  teacher: \"" << Path("teacher.pt") << "\"\n"
        << "  architecture:\n    hidden: [32]\n"
        << "storage:\n  state_dir: \"" << State() << "\"\n"
        << "replay:\n  holdout_fraction: 0.1\n"
        // Rounds only when the loop asks, so that after a restart nothing
        // runs until the checks are done.
        << "learner:\n  trigger_count: 100000000\n  trigger_interval_s: 2592000\n"
        << "  idle_priority: false\n  nice: 0\n  yield_above_rps: 0\n  epochs: 2\n  batch_size: 32\n"
        << "  learning_rate: 0.01\n  max_steps: 300\n  keep_versions: 4\n  keep_served_versions: 3\n";
    return Status::Ok();
  }

  Status Cycle(int cycle) {
    std::uniform_real_distribution<double> u(0, 1);
    if (cycle > 0 && u(rng_) < o_.startup_kill_fraction) {
      // A kill while it recovers, loads and opens its stores.
      CheckStoreOffline(cycle);
      ChildProcess child;
      if (!StartServe(child, Path("distilld.yaml"), Path("startup.log"), {}, o_.distilld)) return Status::Internal("fork failed");
      std::this_thread::sleep_for(std::chrono::milliseconds(rng_() % 300));
      KillAndReap(child, cycle);
      ++r_.startup_kills;
      Progress(cycle, "killed during start-up");
      return Status::Ok();
    }
    if (cycle == 0) {
      RETURN_IF_ERROR(Start(cycle));
      if (port_ == 0) return Status::Internal("the first start failed: " + r_.failures.back());
    } else {
      RETURN_IF_ERROR(CheckAfterKill(cycle, /*then_stop=*/false));
    }
    if (port_ != 0) RunWorkersAndKill(cycle);
    return Status::Ok();
  }

  // Starts the daemon in running_; port_ is its port once ready, else 0.
  Status Start(int cycle) {
    port_ = 0;
    running_ = std::make_unique<ChildProcess>();
    const std::string log = Path("daemon.log");
    fs::remove(log);
    const Clock::time_point started = Clock::now();
    if (!StartServe(*running_, Path("distilld.yaml"), log, {}, o_.distilld)) return Status::Internal("fork failed");
    port_ = WaitReady(*running_, log, started, cycle);
    if (port_ == 0) running_.reset();
    return Status::Ok();
  }

  // Checks the state the last kill left: the store with the daemon down,
  // then the accounting, registry and files once it is restarted and ready
  // (and idle: rounds start only when the workers ask). Leaves it running
  // for the workers unless then_stop.
  Status CheckAfterKill(int cycle, bool then_stop) {
    CheckStoreOffline(cycle);
    RETURN_IF_ERROR(Start(cycle));
    if (port_ == 0) return Status::Ok();
    CheckAccounting(port_, cycle);
    CheckRegistry(port_, cycle);
    if (then_stop) {
      running_->Signal(SIGTERM);
      running_->Wait(std::chrono::seconds(30));
      running_.reset();
      port_ = 0;
    }
    return Status::Ok();
  }

  // The port once GET /v2/health/ready answers 200, else 0 (recorded).
  uint16_t WaitReady(ChildProcess& child, const std::string& log, Clock::time_point started, int cycle) {
    uint16_t port = WaitForPort(log);
    bool ready = false;
    while (port != 0 && MsSince(started) < 60000) {
      TcpClient c(Loopback(port));
      if (c.connected() && c.Get("/v2/health/ready").status == 200) {
        ready = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!ready) {
      ++r_.serve_errors;
      Fail(cycle, "not ready within 60 s; log:\n" + Tail(ReadText(log)));
      child.Signal(SIGKILL);
      child.Wait(std::chrono::seconds(10));
      return 0;
    }
    const int64_t ms = MsSince(started);
    ready_total_ms_ += ms;
    ++ready_count_;
    r_.max_ready_ms = std::max(r_.max_ready_ms, ms);
    r_.mean_ready_ms = static_cast<double>(ready_total_ms_) / ready_count_;
    if (ms > o_.ready_target_ms) ++r_.slow_starts;
    return port;
  }

  // With the daemon down: what the store holds against what was acknowledged.
  void CheckStoreOffline(int cycle) {
    storage::SampleStoreOptions so;
    so.path = State("samples");
    auto store = storage::SampleStore::Open(so);
    if (!store.ok()) {
      Fail(cycle, "opening the sample store: " + store.status().ToString());
      ++r_.samples_lost;
      return;
    }
    auto incoming = (*store)->ReadIncoming(0, std::numeric_limits<size_t>::max());
    if (!incoming.ok()) {
      Fail(cycle, "reading incoming: " + incoming.status().ToString());
      return;
    }
    std::map<uint64_t, const storage::Sample*> waiting;
    for (const auto& s : *incoming) waiting[s.id] = &s.sample;
    for (auto it = pending_.begin(); it != pending_.end();) {
      auto w = waiting.find(it->first);
      if (w == waiting.end()) {  // consumed by a round (checked by the accounting)
        if (consumed_.size() <= it->first) consumed_.resize(it->first + 1 + consumed_.size());
        consumed_[it->first] = true;
        it = pending_.erase(it);
        continue;
      }
      if (w->second->data != it->second.data || w->second->label != it->second.label) {
        ++r_.samples_altered;
        Fail(cycle, "sample " + std::to_string(it->first) + " is stored with other bytes or label");
      }
      ++it;
    }
    for (const auto& [id, s] : waiting) {
      if (id < consumed_.size() && consumed_[id]) {
        ++r_.samples_resurrected;
        Fail(cycle, "sample " + std::to_string(id) + " was consumed and is waiting again");
      }
    }
    auto next = (*store)->Get(storage::Family::kState, "storage/next_incoming_id");
    uint64_t next_id = 1;
    if (next.ok() && next->has_value() && (*next)->size() == 8) {
      next_id = 0;
      for (unsigned char c : **next) next_id = next_id << 8 | c;
    }
    stored_ = static_cast<int64_t>(next_id) - 1;
    if (max_acked_ > stored_) {
      r_.samples_lost += max_acked_ - stored_;
      Fail(cycle, "acknowledged up to id " + std::to_string(max_acked_) + ", store counts " + std::to_string(stored_));
    }
  }

  // Restarted, before any round: waiting + offered + held out = stored.
  void CheckAccounting(uint16_t port, int cycle) {
    TcpClient c(Loopback(port));
    Reply l = c.Get("/v1/learner");
    rapidjson::Document d = ParseJson(l.body);
    if (l.status != 200 || !d.IsObject() || !d["buffer"].IsObject() || !d["holdout"].IsObject()) {
      ++r_.serve_errors;
      Fail(cycle, "GET /v1/learner: " + std::to_string(l.status) + " " + l.body);
      return;
    }
    const int64_t waiting = d["samples_waiting"].GetInt64();
    const int64_t seen = d["buffer"]["seen"].GetInt64();
    const int64_t held = d["holdout"]["held_out_total"].GetInt64();
    r_.samples_stored = stored_;
    r_.samples_consumed = seen + held;
    if (waiting + seen + held != stored_) {
      ++r_.accounting_errors;
      if (waiting + seen + held < stored_) r_.samples_lost += stored_ - (waiting + seen + held);
      Fail(cycle, "waiting " + std::to_string(waiting) + " + offered " + std::to_string(seen) + " + held out " +
                      std::to_string(held) + " != stored " + std::to_string(stored_));
    }
  }

  void CheckRegistry(uint16_t port, int cycle) {
    storage::RegistryOptions ro;
    ro.path = State("registry.sqlite");
    auto reg = storage::Registry::Open(ro);
    if (!reg.ok()) {
      ++r_.serve_errors;
      Fail(cycle, "opening the registry: " + reg.status().ToString());
      return;
    }
    auto rounds = (*reg)->ListRounds(std::numeric_limits<int32_t>::max());
    auto versions = (*reg)->ListVersions();
    if (!rounds.ok() || !versions.ok()) {
      Fail(cycle, "reading the registry");
      ++r_.serve_errors;
      return;
    }
    r_.rounds_promoted = r_.rounds_rejected = r_.rounds_aborted = r_.rounds_failed = 0;
    for (const auto& round : *rounds) {
      switch (round.outcome) {
        case storage::RoundOutcome::kPromoted: ++r_.rounds_promoted; break;
        case storage::RoundOutcome::kRejected: ++r_.rounds_rejected; break;
        case storage::RoundOutcome::kAborted: ++r_.rounds_aborted; break;
        case storage::RoundOutcome::kFailed: ++r_.rounds_failed; break;
        default: break;
      }
      if (storage::IsOpen(round.outcome)) {
        ++r_.rounds_left_open;
        Fail(cycle, "round " + std::to_string(round.id) + " left " +
                        std::string(storage::RoundOutcomeName(round.outcome)));
      }
    }
    std::map<std::string, bool> kept_by_file;
    int64_t active = 0;
    for (const auto& v : *versions) {
      r_.versions_created = std::max(r_.versions_created, v.id);
      if (v.status == storage::VersionStatus::kActive) active = v.id;
      const std::string file = State(v.path);
      kept_by_file[fs::path(v.path).filename().string()] = !v.file_removed_us.has_value();
      if (v.file_removed_us) continue;
      if (!fs::exists(file)) {
        ++r_.versions_missing_file;
        Fail(cycle, "version " + std::to_string(v.id) + " is registered without its file");
        continue;
      }
      Result<std::string> sha = learner::Sha256File(file);
      if (!sha.ok() || *sha != v.sha256) {
        ++r_.versions_corrupt;
        Fail(cycle, "version " + std::to_string(v.id) + (v.id == active ? " (active)" : "") +
                        ": file does not match its checksum");
      }
    }
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(State("models"), ec)) {
      const std::string name = entry.path().filename().string();
      auto row = kept_by_file.find(name);
      if (row == kept_by_file.end() || !row->second) {
        ++r_.files_without_version;
        Fail(cycle, "models/" + name + " has no kept version");
      }
    }
    // It serves the active version.
    TcpClient c(Loopback(port));
    std::string body = R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,4,4],"data":[)";
    for (int p = 0; p < kPixels; ++p) body += (p ? ",0.5" : "0.5");
    Reply served = c.Post("/v2/models/fashion/infer", body + "]}]}");
    rapidjson::Document d = ParseJson(served.body);
    if (served.status != 200 || active == 0 || !d.IsObject() || !d.HasMember("model_version") ||
        std::string(d["model_version"].GetString()) != std::to_string(active)) {
      ++r_.serve_errors;
      Fail(cycle, "infer after restart: " + std::to_string(served.status) + " " + served.body + " (active " +
                      std::to_string(active) + ")");
    }
  }

  void RunWorkersAndKill(int cycle) {
    ChildProcess& daemon = *running_;
    const uint16_t port = port_;
    std::atomic<bool> stop{false};
    std::atomic<int64_t> infer_ok{0};
    std::mutex mu;
    std::vector<std::thread> workers;
    const uint64_t seed = rng_();
    workers.emplace_back([&, seed] {  // ingest
      std::mt19937_64 rng(seed);
      TcpClient c(Loopback(port));
      int64_t sent = 0;
      while (!stop && c.connected() && sent < o_.max_samples_per_cycle) {
        std::vector<Expected> batch;
        std::string data, labels;
        for (int i = 0; i < o_.samples_per_batch; ++i) {
          const int cls = static_cast<int>(rng() % kClasses);
          std::vector<float> x = task_.Draw(cls, rng);
          Expected e;
          e.data.assign(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
          if (rng() % 5 != 0) e.label = cls;  // a fifth unlabelled: the KD-only path
          for (float v : x) data += (data.empty() ? "" : ",") + Num(v);
          labels += (labels.empty() ? "" : ",") + std::to_string(e.label.value_or(-1));
          batch.push_back(std::move(e));
        }
        const std::string n = std::to_string(batch.size());
        Reply r = c.Post("/v1/samples", R"({"inputs":[{"name":"input","datatype":"FP32","shape":[)" + n +
                                            R"(,1,4,4],"data":[)" + data +
                                            R"(]},{"name":"label","datatype":"INT64","shape":[)" + n +
                                            R"(],"data":[)" + labels + "]}]}");
        if (r.status == 0) break;  // killed
        if (r.status != 200) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        rapidjson::Document d = ParseJson(r.body);
        if (!d.IsObject() || !d.HasMember("first_id")) continue;
        const uint64_t first = d["first_id"].GetUint64();
        sent += static_cast<int64_t>(batch.size());
        {
          std::lock_guard<std::mutex> lock(mu);
          for (size_t i = 0; i < batch.size(); ++i) pending_[first + i] = std::move(batch[i]);
          r_.samples_acked += static_cast<int64_t>(batch.size());
          max_acked_ = std::max<int64_t>(max_acked_, static_cast<int64_t>(first + batch.size() - 1));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(o_.ingest_interval_ms));
      }
    });
    workers.emplace_back([&] {  // inference
      TcpClient c(Loopback(port));
      std::string body = R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,4,4],"data":[)";
      for (int p = 0; p < kPixels; ++p) body += (p ? ",0.25" : "0.25");
      body += "]}]}";
      while (!stop && c.connected()) {
        Reply r = c.Post("/v2/models/fashion/infer", body);
        if (r.status == 0) break;
        if (r.status == 200) ++infer_ok;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
    workers.emplace_back([&, seed] {  // learner rounds
      std::mt19937_64 rng(seed + 1);
      TcpClient c(Loopback(port));
      while (!stop && c.connected()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 350));
        if (stop) break;
        if (c.Post("/v1/learner/rounds", "{}").status == 0) break;
      }
    });
    std::uniform_int_distribution<int64_t> delay(o_.min_kill_ms, std::max(o_.min_kill_ms, o_.max_kill_ms));
    const int64_t kill_ms = delay(rng_);
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_ms));
    if (std::optional<int> died = daemon.Wait(std::chrono::milliseconds(0))) {
      ++r_.serve_errors;
      Fail(cycle, "the daemon exited by itself (wait status " + std::to_string(*died) + "); log:\n" +
                      Tail(ReadText(Path("daemon.log"))));
    }
    KillAndReap(daemon, cycle);
    stop = true;
    for (auto& t : workers) t.join();
    r_.infer_ok += infer_ok.load();
    running_.reset();
    Progress(cycle, "killed after " + std::to_string(kill_ms) + " ms");
  }

  void KillAndReap(ChildProcess& child, int cycle) {
    child.Signal(SIGKILL);
    if (!child.Wait(std::chrono::seconds(30)).has_value()) Fail(cycle, "the daemon did not die on SIGKILL");
  }

  void Progress(int cycle, const std::string& what) {
    if (!o_.progress) return;
    std::ostringstream os;
    os << "cycle " << cycle + 1 << "/" << o_.cycles << ": " << what << "; acked " << r_.samples_acked
       << ", stored " << stored_ << ", versions " << r_.versions_created << ", rounds promoted "
       << r_.rounds_promoted << "/rejected " << r_.rounds_rejected << "/aborted " << r_.rounds_aborted
       << ", ready max " << r_.max_ready_ms << " ms" << (r_.clean() ? "" : ", CHECKS FAILED");
    o_.progress(os.str());
  }

  CrashLoopOptions o_;
  Task task_;
  std::mt19937_64 rng_;
  CrashLoopReport r_;
  // Acknowledged samples not yet seen consumed, and the ids seen consumed.
  std::map<uint64_t, Expected> pending_;
  std::vector<bool> consumed_;
  int64_t max_acked_ = 0;
  int64_t stored_ = 0;  // ever stored, per the store's id counter
  std::unique_ptr<ChildProcess> running_;  // the daemon the workers talk to
  uint16_t port_ = 0;
  int64_t ready_total_ms_ = 0;
  int64_t ready_count_ = 0;
};

}  // namespace

std::string CrashLoopReport::Summary() const {
  std::ostringstream os;
  os << "cycles: " << cycles << "\nstartup_kills: " << startup_kills << "\nsamples_acked: " << samples_acked
     << "\nsamples_stored: " << samples_stored << "\nsamples_consumed: " << samples_consumed
     << "\nsamples_lost: " << samples_lost << "\nsamples_altered: " << samples_altered
     << "\nsamples_resurrected: " << samples_resurrected << "\naccounting_errors: " << accounting_errors
     << "\nversions_created: " << versions_created << "\nversions_corrupt: " << versions_corrupt
     << "\nversions_missing_file: " << versions_missing_file << "\nfiles_without_version: " << files_without_version
     << "\nrounds_promoted: " << rounds_promoted << "\nrounds_rejected: " << rounds_rejected
     << "\nrounds_aborted: " << rounds_aborted << "\nrounds_failed: " << rounds_failed
     << "\nrounds_left_open: " << rounds_left_open << "\nserve_errors: " << serve_errors
     << "\ninfer_ok: " << infer_ok << "\nready_max_ms: " << max_ready_ms << "\nready_mean_ms: " << mean_ready_ms
     << "\nslow_starts: " << slow_starts << "\nclean: " << (clean() ? "yes" : "no") << "\n";
  for (const auto& f : failures) os << "failure: " << f << "\n";
  return os.str();
}

Result<CrashLoopReport> RunCrashLoop(const CrashLoopOptions& options) {
  if (options.work_dir.empty() || options.distilld.empty()) {
    return Status::InvalidArgument("the crash loop needs a work_dir and the distilld binary");
  }
  Loop loop(options);
  return loop.Run();
}

}  // namespace distilld::testing
