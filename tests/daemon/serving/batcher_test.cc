// First: orders LibTorch (glog CHECK) before doctest.
#include "tests/learner/torch_doctest.h"


#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "daemon/serving/batcher.h"
#include "tests/daemon/serving/test_models.h"
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

  std::unique_ptr<Batcher> Make(BatchingLimits limits, int threads = 1, Clock* clock = nullptr,
                                std::function<void(std::function<void()>)> run_inline = nullptr) {
    BatcherOptions o;
    o.run_inline = std::move(run_inline);
    o.clock = clock;
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

// Stands in for the I/O loop of inline mode: keeps what the batcher posts
// until the test runs it, so the test decides when "the loop" gets there.
struct HeldLoop {
  std::mutex mu;
  std::vector<std::function<void()>> posted;

  std::function<void(std::function<void()>)> Poster() {
    return [this](std::function<void()> fn) {
      std::lock_guard<std::mutex> lock(mu);
      posted.push_back(std::move(fn));
    };
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu);
    return posted.size();
  }
  // Runs the oldest posted function on the calling thread.
  void RunOne() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu);
      REQUIRE(!posted.empty());
      fn = std::move(posted.front());
      posted.erase(posted.begin());
    }
    fn();
  }
};

std::vector<float> Row(const at::Tensor& x, int64_t i) {
  at::Tensor row = x[i].contiguous();
  return std::vector<float>(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
}

}  // namespace

TEST_CASE("batcher: concurrent requests share one forward pass and get their own rows") {
  Fixture f;
  BatchingLimits limits;
  limits.max_batch_size = 64;
  limits.max_queue_delay_us = 200000;  // long enough that all 6 requests queue up
  limits.early_dispatch = false;       // else the first one would run alone at once
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

namespace {

// Waits for a result, failing the test instead of hanging if none comes.
Result<InferOutput> Await(std::promise<Result<InferOutput>>& p) {
  auto fut = p.get_future();
  REQUIRE(fut.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  return fut.get();
}

// Counts of the batch-size histogram at or below `le`.
bool HasBucket(const std::string& text, const std::string& le, int count) {
  return text.find("distilld_batch_size_bucket{le=\"" + le + "\"} " + std::to_string(count) + "\n") !=
         std::string::npos;
}

}  // namespace

TEST_CASE("batcher: early dispatch serves a lone request without waiting out the delay") {
  Fixture f;
  ManualClock clock;  // frozen: the delay never passes
  BatchingLimits limits;
  limits.max_queue_delay_us = 3'600'000'000;
  auto batcher = f.Make(limits, 1, &clock);
  CHECK(batcher->early_dispatch_target() == 1);
  std::vector<float> in(16, 0.5f);
  for (int i = 0; i < 3; ++i) {
    std::promise<Result<InferOutput>> p;
    REQUIRE(batcher->Submit(Task(in, 1, &p)).ok());
    auto r = Await(p);
    REQUIRE(r.ok());
    CHECK(r->queue_us == 0);
  }
  CHECK(batcher->early_dispatch_target() == 1);
  CHECK(HasBucket(f.metrics.Render(), "1", 3));
}

TEST_CASE("batcher: early dispatch waits for as many requests as were recently outstanding") {
  Fixture f;
  ManualClock clock;  // frozen: only a full batch or the expected count dispatches
  BatchingLimits limits;
  limits.max_batch_size = 64;
  limits.max_queue_delay_us = 3'600'000'000;
  auto batcher = f.Make(limits, 1, &clock);
  std::vector<float> in(16, 0.5f);

  // Hold the inference thread inside the first request's completion, so
  // five more queue up behind it and then run as one batch.
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  std::promise<Result<InferOutput>> first;
  InferTask t = Task(in, 1, &first);
  t.done = [&](Result<InferOutput> r) {
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    first.set_value(std::move(r));
  };
  REQUIRE(batcher->Submit(std::move(t)).ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return entered; }));
  }
  std::vector<std::promise<Result<InferOutput>>> five(5);
  for (auto& p : five) REQUIRE(batcher->Submit(Task(in, 1, &p)).ok());
  CHECK(batcher->queued_samples() == 5);
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  REQUIRE(Await(first).ok());
  for (auto& p : five) REQUIRE(Await(p).ok());
  // Five requests were outstanding at once (the first one's answer was on
  // its way): the average moved from 1 halfway to 5.
  CHECK(batcher->early_dispatch_target() == 3);

  // Two requests are fewer than expected: they wait (the clock is frozen,
  // so only a third request can release them).
  std::vector<std::promise<Result<InferOutput>>> three(3);
  REQUIRE(batcher->Submit(Task(in, 1, &three[0])).ok());
  REQUIRE(batcher->Submit(Task(in, 1, &three[1])).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(batcher->queued_samples() == 2);
  REQUIRE(batcher->Submit(Task(in, 1, &three[2])).ok());
  for (auto& p : three) REQUIRE(Await(p).ok());
  const std::string text = f.metrics.Render();
  // Batches: 1, 5, 3.
  CHECK(HasBucket(text, "1", 1));
  CHECK(HasBucket(text, "2", 1));
  CHECK(HasBucket(text, "4", 2));
  CHECK(HasBucket(text, "8", 3));
  // The batch of five was outstanding when that window began: 3 -> 4.
  CHECK(batcher->early_dispatch_target() == 4);
}

TEST_CASE("batcher: a batch cut short by the delay lowers the expected count") {
  Fixture f;
  BatchingLimits limits;
  limits.max_batch_size = 64;
  limits.max_queue_delay_us = 200000;  // the six queue up together
  limits.early_dispatch = false;
  auto batcher = f.Make(limits);
  std::vector<float> in(16, 0.5f);
  // Without early dispatch, six requests submitted together wait for the
  // delay and run as one batch, which still teaches the average.
  std::vector<std::promise<Result<InferOutput>>> six(6);
  for (auto& p : six) REQUIRE(batcher->Submit(Task(in, 1, &p)).ok());
  for (auto& p : six) REQUIRE(Await(p).ok());
  const int64_t after_six = batcher->early_dispatch_target();
  CHECK(after_six >= 2);
  limits.early_dispatch = true;
  batcher->UpdateLimits(limits);
  // A lone request now waits for company until the (real) delay passes,
  // then runs alone, and the expectation drops back towards 1.
  for (int i = 0; i < 16 && batcher->early_dispatch_target() > 1; ++i) {
    std::promise<Result<InferOutput>> p;
    REQUIRE(batcher->Submit(Task(in, 1, &p)).ok());
    REQUIRE(Await(p).ok());
  }
  CHECK(batcher->early_dispatch_target() == 1);
}

TEST_CASE("batcher: inline mode runs what one loop pass delivered as one batch, on the loop's thread") {
  Fixture f;
  HeldLoop loop;
  BatchingLimits limits;
  limits.max_batch_size = 64;
  auto batcher = f.Make(limits, /*threads=*/0, nullptr, loop.Poster());
  CHECK(batcher->heartbeats().empty());  // no threads of its own

  at::Tensor x = torch::rand({6, 1, 4, 4});
  torch::NoGradGuard g;
  at::Tensor expected = f.models->Active()->Forward(x).value();
  std::vector<std::promise<Result<InferOutput>>> promises(6);
  std::vector<std::thread::id> ran_on(6);
  for (int i = 0; i < 6; ++i) {
    InferTask t = Task(Row(x, i), 1, &promises[i]);
    t.done = [&, i](Result<InferOutput> r) {
      ran_on[i] = std::this_thread::get_id();
      promises[i].set_value(std::move(r));
    };
    REQUIRE(batcher->Submit(std::move(t)).ok());
  }
  // One drain posted for all six, and nothing ran before the loop got to it.
  CHECK(loop.size() == 1);
  CHECK(batcher->queued_samples() == 6);
  loop.RunOne();
  CHECK(loop.size() == 0);
  CHECK(batcher->queued_samples() == 0);
  for (int i = 0; i < 6; ++i) {
    auto fut = promises[i].get_future();
    REQUIRE(fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
    auto r = fut.get();
    REQUIRE(r.ok());
    CHECK(r->version == 1);
    CHECK(ran_on[i] == std::this_thread::get_id());
    REQUIRE(r->logits.size() == 3);
    for (int j = 0; j < 3; ++j) CHECK(r->logits[j] == doctest::Approx(expected[i][j].item<float>()).epsilon(1e-4));
  }
  const std::string text = f.metrics.Render();
  CHECK(text.find("distilld_batch_size_bucket{le=\"4\"} 0\n") != std::string::npos);
  CHECK(text.find("distilld_batch_size_bucket{le=\"8\"} 1\n") != std::string::npos);

  CHECK(batcher->completed_requests() == 6);
  // The next request posts a fresh drain.
  std::promise<Result<InferOutput>> next;
  REQUIRE(batcher->Submit(Task(Row(x, 0), 1, &next)).ok());
  CHECK(loop.size() == 1);
  loop.RunOne();
  CHECK(next.get_future().get().ok());
}

TEST_CASE("batcher: inline mode posts the rest beyond max_batch_size instead of running it in the same turn") {
  Fixture f;
  HeldLoop loop;
  BatchingLimits limits;
  limits.max_batch_size = 4;
  auto batcher = f.Make(limits, 0, nullptr, loop.Poster());
  std::vector<float> two(2 * 16, 0.25f);
  std::vector<std::promise<Result<InferOutput>>> promises(3);
  for (auto& p : promises) REQUIRE(batcher->Submit(Task(two, 2, &p)).ok());
  CHECK(loop.size() == 1);
  loop.RunOne();  // 2 + 2 samples fill the batch; the third request waits
  CHECK(batcher->queued_samples() == 2);
  CHECK(loop.size() == 1);  // ...for the drain this one posted
  auto third = promises[2].get_future();
  CHECK(third.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);
  loop.RunOne();
  CHECK(loop.size() == 0);
  REQUIRE(third.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  for (int i = 0; i < 2; ++i) CHECK(promises[i].get_future().get()->logits.size() == 6);
  CHECK(third.get()->logits.size() == 6);
  const std::string text = f.metrics.Render();
  CHECK(text.find("distilld_batch_size_bucket{le=\"2\"} 1\n") != std::string::npos);
  CHECK(text.find("distilld_batch_size_bucket{le=\"4\"} 2\n") != std::string::npos);
}

TEST_CASE("batcher: inline mode's Stop answers what the loop never ran; a late drain is harmless") {
  Fixture f;
  HeldLoop loop;
  auto batcher = f.Make(BatchingLimits{}, 0, nullptr, loop.Poster());
  std::vector<float> one(16, 1.f);
  std::vector<std::promise<Result<InferOutput>>> promises(2);
  for (auto& p : promises) REQUIRE(batcher->Submit(Task(one, 1, &p)).ok());
  batcher->Stop();
  for (auto& p : promises) {
    auto r = p.get_future().get();
    REQUIRE(r.ok());
    CHECK(r->logits.size() == 3);
  }
  std::promise<Result<InferOutput>> late;
  CHECK(batcher->Submit(Task(one, 1, &late)).code() == StatusCode::kUnavailable);
  REQUIRE(loop.size() == 1);
  loop.RunOne();  // finds the queue empty
  CHECK(loop.size() == 0);
  CHECK(batcher->queued_samples() == 0);
}

TEST_CASE("batcher: inline mode needs run_inline; negative thread counts are refused") {
  Fixture f;
  BatcherOptions o;
  o.models = f.models.get();
  o.inference_threads = 0;
  auto no_loop = Batcher::Create(o);
  REQUIRE(!no_loop.ok());
  CHECK(no_loop.status().code() == StatusCode::kInvalidArgument);
  CHECK(no_loop.status().message().find("run_inline") != std::string::npos);
  o.inference_threads = -1;
  CHECK(Batcher::Create(o).status().code() == StatusCode::kInvalidArgument);
}
