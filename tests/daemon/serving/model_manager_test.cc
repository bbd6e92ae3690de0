// First: orders LibTorch (glog CHECK) before doctest.
#include "tests/learner/torch_doctest.h"


#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "daemon/serving/model_manager.h"
#include "tests/daemon/serving/test_models.h"
#include "tests/support/temp_dir.h"

using namespace distilld;
using namespace distilld::daemon;

namespace {

ModelManagerOptions Options(const std::string& dir) {
  ModelManagerOptions o;
  o.state_dir = dir;
  o.input_shape = {1, 4, 4};
  o.classes = 3;
  o.warmup_batch_sizes = {1, 4};
  return o;
}

storage::VersionRecord Save(const distilld::testing::TempDir& dir, int64_t id, uint64_t seed) {
  std::filesystem::create_directories(dir.path() / "models");
  std::string rel = "models/v" + std::to_string(id) + ".pt";
  auto saved = learner::SaveModelAtomic(daemon::testing::TinyModel(seed), dir.str(rel));
  REQUIRE(saved.ok());
  storage::VersionRecord r;
  r.id = id;
  r.path = rel;
  r.sha256 = saved->sha256;
  return r;
}

}  // namespace

TEST_CASE("model manager: publishes from disk, serves the same outputs, swaps versions") {
  distilld::testing::TempDir dir;
  MetricsRegistry metrics;
  auto o = Options(dir.str());
  o.metrics = &metrics;
  auto mm = ModelManager::Create(o);
  REQUIRE(mm.ok());
  CHECK((*mm)->Active() == nullptr);

  auto v1 = Save(dir, 1, 11);
  REQUIRE((*mm)->Publish(v1).ok());
  auto a = (*mm)->Active();
  REQUIRE(a != nullptr);
  CHECK(a->version() == 1);
  at::Tensor x = torch::rand({5, 1, 4, 4});
  auto y = a->Forward(x);
  REQUIRE(y.ok());
  torch::NoGradGuard g;
  at::Tensor expected = daemon::testing::TinyModel(11).forward({x}).toTensor();
  CHECK(torch::allclose(*y, expected, 1e-4, 1e-5));  // freeze + optimize keep the outputs

  auto v2 = Save(dir, 2, 12);
  REQUIRE((*mm)->Publish(v2).ok());
  CHECK((*mm)->Active()->version() == 2);
  CHECK((*mm)->swaps() == 2);
  // `a` still holds v1: it is the retired version and can still be found.
  REQUIRE((*mm)->Find(1) != nullptr);
  CHECK((*mm)->Find(1)->version() == 1);
  CHECK((*mm)->Find(3) == nullptr);
  a.reset();
  CHECK((*mm)->Find(1) == nullptr);
  CHECK(metrics.Render().find("distilld_model_active_version 2\n") != std::string::npos);
}

TEST_CASE("model manager: a corrupt or missing file keeps the old version") {
  distilld::testing::TempDir dir;
  auto mm = ModelManager::Create(Options(dir.str()));
  REQUIRE(mm.ok());
  REQUIRE((*mm)->Publish(Save(dir, 1, 1)).ok());

  auto v2 = Save(dir, 2, 2);
  v2.sha256 = std::string(64, '0');
  Status s = (*mm)->Publish(v2);
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK((*mm)->Active()->version() == 1);

  storage::VersionRecord missing;
  missing.id = 3;
  missing.path = "models/none.pt";
  CHECK_FALSE((*mm)->Publish(missing).ok());
  CHECK((*mm)->Active()->version() == 1);

  // A module with the wrong number of classes fails warm-up's shape check.
  learner::ArchSpec wrong = daemon::testing::TinySpec();
  wrong.classes = 5;
  auto m = learner::BuildModel(wrong, 1);
  REQUIRE(m.ok());
  s = (*mm)->PublishModule(4, *m, "");
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK((*mm)->Active()->version() == 1);
}

TEST_CASE("model manager: never more than two versions alive while readers hold old ones") {
  distilld::testing::TempDir dir;
  auto o = Options(dir.str());
  o.optimize = false;
  auto mm = ModelManager::Create(o);
  REQUIRE(mm.ok());
  ModelManager* manager = mm->get();
  REQUIRE(manager->PublishModule(1, daemon::testing::TinyModel(1), "").ok());

  std::atomic<bool> stop{false};
  std::atomic<int> max_alive{0};
  std::thread reader([&] {
    at::Tensor x = torch::rand({1, 1, 4, 4});
    while (!stop.load()) {
      auto m = manager->Active();
      auto y = m->Forward(x);
      CHECK(y.ok());
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // a batch in flight
      int alive = ServedModel::alive();
      int prev = max_alive.load();
      while (alive > prev && !max_alive.compare_exchange_weak(prev, alive)) {
      }
    }
  });
  for (int v = 2; v <= 20; ++v) REQUIRE(manager->PublishModule(v, daemon::testing::TinyModel(v), "").ok());
  stop.store(true);
  reader.join();
  CHECK(manager->Active()->version() == 20);
  CHECK(max_alive.load() <= 2);
  CHECK(max_alive.load() >= 1);
}

TEST_CASE("model manager: a version whose last user is a batch is freed by the next publish, not by the batch") {
  distilld::testing::TempDir dir;
  auto o = Options(dir.str());
  o.optimize = false;
  auto mm = ModelManager::Create(o);
  REQUIRE(mm.ok());
  ModelManager* manager = mm->get();
  const int base = ServedModel::alive();
  REQUIRE(manager->PublishModule(1, daemon::testing::TinyModel(1), "").ok());
  std::shared_ptr<const ServedModel> batch = manager->Active();  // a batch running on v1
  REQUIRE(manager->PublishModule(2, daemon::testing::TinyModel(2), "").ok());
  CHECK(ServedModel::alive() == base + 2);
  CHECK(manager->Find(1) == batch);  // still reachable while in use
  batch.reset();  // the batch ends: v1 is released but not destroyed on this thread
  CHECK(ServedModel::alive() == base + 2);
  CHECK(manager->Find(1) == nullptr);
  REQUIRE(manager->PublishModule(3, daemon::testing::TinyModel(3), "").ok());
  // v1 was freed before v3 loaded; v2, retired with no user, right after the swap.
  CHECK(ServedModel::alive() == base + 1);
  CHECK(manager->Active()->version() == 3);

  // A handle that outlives the manager still frees its model.
  std::shared_ptr<const ServedModel> late = manager->Active();
  mm->reset();
  CHECK(ServedModel::alive() == base + 1);
  late.reset();
  CHECK(ServedModel::alive() == base);
}

TEST_CASE("model manager: preparing on a lower-priority thread leaves the caller's priority as it was") {
  distilld::testing::TempDir dir;
  auto o = Options(dir.str());
  o.prepare_nice = 7;  // lowering a thread's priority cannot be undone, hence a thread of its own
  auto mm = ModelManager::Create(o);
  REQUIRE(mm.ok());
  const id_t tid = static_cast<id_t>(::syscall(SYS_gettid));
  const int before = ::getpriority(PRIO_PROCESS, tid);
  REQUIRE((*mm)->Publish(Save(dir, 1, 4)).ok());
  REQUIRE((*mm)->Publish(Save(dir, 2, 5)).ok());
  CHECK(::getpriority(PRIO_PROCESS, tid) == before);
  CHECK((*mm)->Active()->version() == 2);
  at::Tensor y = (*mm)->Active()->Forward(torch::ones({2, 1, 4, 4})).value();
  CHECK(y.sizes() == at::IntArrayRef({2, 3}));
}
