// Shared by the distiller tests: a small synthetic task (Gaussian blobs), a
// teacher for it, and a fixture whose store and registry are the in-memory
// fakes of tests/support (which pass the same contract tests as RocksDB and
// SQLite) or, for the tests that say so, the real ones in a temp dir.
#pragma once

#include "tests/learner/torch_doctest.h"

#include <chrono>
#include <filesystem>
#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <set>
#include <mutex>
#include <random>
#include <thread>

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cerrno>

#include "learner/distiller.h"
#include "learner/model/model_io.h"
#include "learner/train_step.h"
#include "storage/evaluation_json.h"
#include "tests/support/fake_registry.h"
#include "tests/support/fake_sample_store.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner::distiller_test {

class RecordingPublisher : public VersionPublisher {
 public:
  Status Publish(const storage::VersionRecord& v) override {
    std::lock_guard<std::mutex> lock(mu_);
    published_.push_back(v.id);
    return Status::Ok();
  }
  std::vector<int64_t> published() {
    std::lock_guard<std::mutex> lock(mu_);
    return published_;
  }

 private:
  std::mutex mu_;
  std::vector<int64_t> published_;
};

// Three Gaussian blobs in a 1x2x2 image: class c has mean +2 on pixel c.
inline std::vector<storage::Sample> Blobs(int n, uint64_t seed, bool labelled = true) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.5f);
  std::vector<storage::Sample> out;
  for (int i = 0; i < n; ++i) {
    int64_t c = static_cast<int64_t>(rng() % 3);
    torch::Tensor x = torch::zeros({1, 2, 2});
    auto a = x.accessor<float, 3>();
    for (int p = 0; p < 4; ++p) a[0][p / 2][p % 2] = noise(rng) + (p == c ? 2.0f : 0.0f);
    out.push_back(TensorToSample(x, labelled ? std::optional<int64_t>(c) : std::nullopt));
  }
  return out;
}

// Blobs of the listed classes only (a phase of a class-incremental stream).
inline std::vector<storage::Sample> BlobsOf(int n, uint64_t seed, const std::vector<int64_t>& classes) {
  std::vector<storage::Sample> out;
  for (uint64_t round = 0; static_cast<int>(out.size()) < n; ++round) {
    for (auto& s : Blobs(n, seed * 1000 + round)) {
      if (std::find(classes.begin(), classes.end(), *s.label) != classes.end() && static_cast<int>(out.size()) < n) {
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

// A fixed, parameter-free teacher that reads the class off the pixels.
inline torch::jit::Module BlobTeacher() {
  torch::jit::Module t("BlobTeacher");
  t.define(
      "def features(self, x):\n        return x.flatten(1)\n\n"
      "def forward(self, x):\n        return x.flatten(1).narrow(1, 0, 3) * 3.0\n");
  return t;
}

// The fakes by default: most tests are about the learner, not the disk.
enum class Backend { kFake, kReal };

struct Fixture {
  testing::TempDir dir;
  ManualClock clock;
  std::unique_ptr<storage::SampleStore> store;
  std::unique_ptr<storage::Registry> registry;
  std::unique_ptr<VersionStore> versions;
  std::unique_ptr<replaybuffer::ReplayBuffer> buffer;
  std::unique_ptr<replaybuffer::HoldoutSet> holdout;
  RecordingPublisher publisher;
  storage::VersionRecord initial;

  // student_path: the initial student's file ("" = a built-in MLP 4-8-3).
  explicit Fixture(const std::string& student_path = "", Backend backend = Backend::kFake) {
    if (backend == Backend::kFake) {
      store = testing::NewFakeSampleStore(&clock);
      registry = testing::NewFakeRegistry(&clock);
    } else {
      storage::SampleStoreOptions so;
      so.path = dir.str("samples");
      so.sync = false;
      so.clock = &clock;
      store = std::move(storage::SampleStore::Open(so)).value();
      storage::RegistryOptions ro;
      ro.path = dir.str("registry.sqlite");
      ro.clock = &clock;
      registry = std::move(storage::Registry::Open(ro)).value();
    }
    replaybuffer::ReplayBufferOptions bo;
    bo.capacity = 200;
    bo.policy = replaybuffer::Policy::kClassBalanced;
    buffer = std::move(replaybuffer::ReplayBuffer::Open(store.get(), bo)).value();
    replaybuffer::HoldoutOptions ho;
    ho.fraction = 0.2;
    holdout = std::move(replaybuffer::HoldoutSet::Open(store.get(), ho)).value();
    InitialStudentOptions io;
    io.arch = ArchSpec{"mlp", {1, 2, 2}, 3, {8}, {}};
    io.student_path = student_path;
    io.seed = 5;
    versions = std::move(VersionStore::Create({dir.str(), registry.get()})).value();
    auto v = versions->LoadOrCreateInitial(io);
    REQUIRE(v.ok());
    initial = *v;
  }

  DistillerOptions Options() {
    DistillerOptions o;
    o.state_dir = dir.str();
    o.store = store.get();
    o.registry = registry.get();
    o.buffer = buffer.get();
    o.holdout = holdout.get();
    o.publisher = &publisher;
    o.clock = &clock;
    o.teacher = BlobTeacher();
    o.active_version = ActiveId();
    o.learner.learning_rate = 0.05;
    o.learner.epochs = 5;
    o.learner.batch_size = 32;
    o.learner.temperature = 2.0;
    o.learner.nice = 0;
    // Under ctest -j a SCHED_IDLE learner would wait for the other tests'
    // CPU; the policy has its own test below.
    o.learner.idle_priority = false;
    o.poll_interval_ms = 20;
    o.auto_trigger = false;
    return o;
  }

  int64_t ActiveId() { return registry->ActiveVersion().value()->id; }
  void Append(const std::vector<storage::Sample>& s) { REQUIRE(store->AppendIncoming(s).ok()); }
};

// The round's evaluation; the round must have one.
inline const storage::RoundEvaluation& Eval(const storage::RoundRecord& r) {
  REQUIRE(r.evaluation.has_value());
  return *r.evaluation;
}

// The evaluation as the API shows it, for INFO().
inline std::string Shown(const storage::RoundRecord& r) {
  return r.evaluation ? storage::EncodeRoundEvaluation(*r.evaluation) : std::string("{}");
}

// The round's loss summary; the round must have trained.
inline const storage::RoundLoss& Loss(const storage::RoundRecord& r) {
  REQUIRE(r.loss.has_value());
  return *r.loss;
}

template <typename F>
bool WaitFor(F pred, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

}  // namespace distilld::learner::distiller_test
