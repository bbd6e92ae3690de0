// First: orders LibTorch (glog CHECK) before doctest.
#include "tests/learner/torch_doctest.h"


#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "daemon/batcher.h"
#include "tests/daemon/test_models.h"
#include "tests/support/temp_dir.h"

using namespace distilld;
using namespace distilld::daemon;

namespace {

struct Fixture {
  distilld::testing::TempDir dir;
  MetricsRegistry metrics;
  std::unique_ptr<ModelManager> models;

  Fixture() {
    ModelManagerOptions o;
    o.state_dir = dir.str();
    o.input_shape = {1, 4, 4};
    o.classes = 3;
    o.warmup_batch_sizes = {1, 8};
    auto mm = ModelManager::Create(o);
    REQUIRE(mm.ok());
    models = std::move(mm).value();
    REQUIRE(models->PublishModule(1, daemon::testing::TinyModel(5), "").ok());
  }

  std::unique_ptr<Batcher> Make(BatchingLimits limits, int threads = 1) {
    BatcherOptions o;
    o.limits = limits;
    o.inference_threads = threads;
    o.input_shape = {1, 4, 4};
    o.classes = 3;
    o.models = models.get();
    o.metrics = &metrics;
    auto b = Batcher::Create(o);
    REQUIRE(b.ok());
    return std::move(b).value();
  }
};

InferTask Task(const std::vector<float>& input, int64_t batch, std::promise<Result<InferOutput>>* p) {
  InferTask t;
  t.batch = batch;
  t.input = input;
  t.done = [p](Result<InferOutput> r) { p->set_value(std::move(r)); };
  return t;
}

}  // namespace

TEST_CASE("batcher: concurrent requests share one forward pass and get their own rows") {
  Fixture f;
  BatchingLimits limits;
  limits.max_batch_size = 64;
  limits.max_queue_delay_us = 200000;  // long enough that all 6 requests queue up
  auto batcher = f.Make(limits);

  at::Tensor x = torch::rand({6, 1, 4, 4});
  torch::NoGradGuard g;
  at::Tensor expected = f.models->Active()->Forward(x).value();
  std::vector<std::promise<Result<InferOutput>>> promises(6);
  for (int i = 0; i < 6; ++i) {
    at::Tensor row = x[i].contiguous();
    std::vector<float> in(row.data_ptr<float>(), row.data_ptr<float>() + 16);
    REQUIRE(batcher->Submit(Task(in, 1, &promises[i])).ok());
  }
  for (int i = 0; i < 6; ++i) {
    auto r = promises[i].get_future().get();
    REQUIRE(r.ok());
    CHECK(r->version == 1);
    REQUIRE(r->logits.size() == 3);
    for (int j = 0; j < 3; ++j) CHECK(r->logits[j] == doctest::Approx(expected[i][j].item<float>()).epsilon(1e-4));
  }
  const std::string text = f.metrics.Render();
  // One batch of 6: the le="4" bucket is empty and le="8" holds it.
  CHECK(text.find("distilld_batch_size_bucket{le=\"4\"} 0\n") != std::string::npos);
  CHECK(text.find("distilld_batch_size_bucket{le=\"8\"} 1\n") != std::string::npos);
}

TEST_CASE("batcher: max_batch_size splits, a full queue refuses at once, Stop drains") {
  Fixture f;
  BatchingLimits limits;
  limits.max_batch_size = 4;
  limits.max_queue_delay_us = 100000;
  limits.queue_capacity = 10;
  auto batcher = f.Make(limits);
  std::vector<float> three(3 * 16, 0.5f);
  std::vector<std::promise<Result<InferOutput>>> promises(4);
  REQUIRE(batcher->Submit(Task(three, 3, &promises[0])).ok());
  REQUIRE(batcher->Submit(Task(three, 3, &promises[1])).ok());
  REQUIRE(batcher->Submit(Task(three, 3, &promises[2])).ok());
  CHECK(batcher->queued_samples() <= 9);
  // 9 (or fewer, if a batch already left) + 3 > 10 only while all are queued;
  // make it deterministic with a 20-sample request instead.
  std::vector<float> big(20 * 16, 0.f);
  Status s = batcher->Submit(Task(big, 20, &promises[3]));
  CHECK(s.code() == StatusCode::kUnavailable);
  batcher->Stop();  // runs what is queued without waiting for the delay
  for (int i = 0; i < 3; ++i) {
    auto r = promises[i].get_future().get();
    REQUIRE(r.ok());
    CHECK(r->logits.size() == 9);
  }
  std::promise<Result<InferOutput>> late;
  CHECK(batcher->Submit(Task(three, 3, &late)).code() == StatusCode::kUnavailable);
  const std::string text = f.metrics.Render();
  CHECK(text.find("distilld_batch_size_bucket{le=\"2\"} 0\n") != std::string::npos);
  // 3+3 > 4, so each request ran alone: three batches of 3.
  CHECK(text.find("distilld_batch_size_bucket{le=\"4\"} 3\n") != std::string::npos);
  CHECK(text.find("distilld_batch_rejected_total 1\n") != std::string::npos);
}

TEST_CASE("batcher: pinned versions, results across a swap name their version") {
  Fixture f;
  BatchingLimits limits;
  limits.max_queue_delay_us = 0;
  auto batcher = f.Make(limits, 2);
  std::vector<float> in(16, 0.25f);

  std::promise<Result<InferOutput>> p1;
  InferTask t = Task(in, 1, &p1);
  t.version = 9;
  REQUIRE(batcher->Submit(std::move(t)).ok());
  auto r1 = p1.get_future().get();
  CHECK(r1.status().code() == StatusCode::kNotFound);

  auto held = f.models->Active();  // keeps v1 alive as the retired version
  REQUIRE(f.models->PublishModule(2, daemon::testing::TinyModel(6), "").ok());
  std::promise<Result<InferOutput>> p2, p3;
  InferTask pinned = Task(in, 1, &p2);
  pinned.version = 1;
  REQUIRE(batcher->Submit(std::move(pinned)).ok());
  REQUIRE(batcher->Submit(Task(in, 1, &p3)).ok());
  auto r2 = p2.get_future().get();
  auto r3 = p3.get_future().get();
  REQUIRE(r2.ok());
  REQUIRE(r3.ok());
  CHECK(r2->version == 1);
  CHECK(r3->version == 2);
  CHECK(r2->logits != r3->logits);
}
