// ModelStats: per-version counts and durations in the statistics extension's
// shape, its bound on versions kept, and its JSON encoding.
#include "daemon/serving/model_stats.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

using namespace distilld::daemon;

namespace {

RequestTiming Timing(int64_t total, int64_t queue = 0, int64_t input = 0, int64_t infer = 0,
                     int64_t output = 0) {
  RequestTiming t;
  t.total_us = total;
  t.queue_us = queue;
  t.input_us = input;
  t.infer_us = infer;
  t.output_us = output;
  return t;
}

ModelStatsOptions FixedWall(int64_t ms) {
  ModelStatsOptions o;
  o.wall_ms = [ms] { return ms; };
  return o;
}

}  // namespace

TEST_CASE("model stats: executions, successes and failures add up per version") {
  ModelStats stats(FixedWall(1'700'000'000'123));
  CHECK(stats.All().empty());
  CHECK_FALSE(stats.Of(3).has_value());

  // One batch of 3 samples from two requests (2 + 1), then a single sample.
  stats.RecordExecution(3, 3, 10, 200, 5);
  stats.RecordSuccess(3, Timing(400, 50, 20, 200, 30));
  stats.RecordSuccess(3, Timing(350, 40, 10, 200, 20));
  stats.RecordExecution(3, 1, 2, 100, 1);
  stats.RecordSuccess(3, Timing(150, 5, 5, 100, 10));
  stats.RecordFailure(3, 7);

  std::optional<VersionStats> v = stats.Of(3);
  REQUIRE(v.has_value());
  CHECK(v->version == 3);
  CHECK(v->inference_count == 4);  // samples
  CHECK(v->execution_count == 2);  // forward passes
  CHECK(v->last_inference_ms == 1'700'000'000'123);
  CHECK(v->success.count == 3);
  CHECK(v->success.ns == 900'000);
  CHECK(v->fail.count == 1);
  CHECK(v->fail.ns == 7'000);
  CHECK(v->queue.ns == 95'000);
  CHECK(v->compute_input.ns == 35'000);
  CHECK(v->compute_infer.count == 3);
  CHECK(v->compute_infer.ns == 500'000);
  CHECK(v->compute_output.ns == 60'000);
  REQUIRE(v->batch_stats.size() == 2);
  CHECK(v->batch_stats[0].batch_size == 1);
  CHECK(v->batch_stats[0].compute_infer.count == 1);
  CHECK(v->batch_stats[0].compute_infer.ns == 100'000);
  CHECK(v->batch_stats[1].batch_size == 3);
  CHECK(v->batch_stats[1].compute_input.ns == 10'000);
  CHECK(v->batch_stats[1].compute_output.ns == 5'000);

  // A failure alone creates a record without a last inference.
  stats.RecordFailure(4, 1);
  std::optional<VersionStats> w = stats.Of(4);
  REQUIRE(w.has_value());
  CHECK(w->last_inference_ms == 0);
  CHECK(w->success.count == 0);
  CHECK(w->fail.count == 1);
  std::vector<VersionStats> all = stats.All();
  REQUIRE(all.size() == 2);
  CHECK(all[0].version == 3);
  CHECK(all[1].version == 4);
}

TEST_CASE("model stats: keeps the newest max_versions versions") {
  ModelStatsOptions o = FixedWall(1);
  o.max_versions = 3;
  ModelStats stats(o);
  for (int64_t v = 1; v <= 5; ++v) stats.RecordExecution(v, 1, 0, 1, 0);
  std::vector<VersionStats> all = stats.All();
  REQUIRE(all.size() == 3);
  CHECK(all[0].version == 3);
  CHECK(all[2].version == 5);
  CHECK_FALSE(stats.Of(1).has_value());
}

TEST_CASE("model stats: concurrent recorders lose no count") {
  ModelStats stats(FixedWall(1));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&stats] {
      for (int i = 0; i < 1000; ++i) {
        stats.RecordExecution(1, 2, 1, 1, 1);
        stats.RecordSuccess(1, Timing(1));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::optional<VersionStats> v = stats.Of(1);
  REQUIRE(v.has_value());
  CHECK(v->execution_count == 4000);
  CHECK(v->inference_count == 8000);
  CHECK(v->success.count == 4000);
  CHECK(v->success.ns == 4'000'000);
}

TEST_CASE("model stats: JSON in Triton's shape") {
  ModelStats stats(FixedWall(42));
  stats.RecordExecution(2, 1, 1, 3, 1);
  stats.RecordSuccess(2, Timing(5, 1, 1, 3, 1));
  std::vector<VersionStats> all = stats.All();
  VersionStats none;
  none.version = 9;
  all.push_back(none);
  const std::string json = EncodeModelStats("fashion", all);
  CHECK(json.rfind(R"({"model_stats":[{"name":"fashion","version":"2","last_inference":42,)", 0) ==
        0);
  CHECK(
      json.find(
          R"("inference_count":1,"execution_count":1,"inference_stats":{"success":{"count":1,"ns":5000},)"
          R"("fail":{"count":0,"ns":0},"queue":{"count":1,"ns":1000},)") != std::string::npos);
  CHECK(json.find(R"("compute_infer":{"count":1,"ns":3000},"compute_output":{"count":1,"ns":1000},)"
                  R"("cache_hit":{"count":0,"ns":0},"cache_miss":{"count":0,"ns":0}},)") !=
        std::string::npos);
  CHECK(json.find(R"("batch_stats":[{"batch_size":1,"compute_input":{"count":1,"ns":1000},)") !=
        std::string::npos);
  CHECK(json.find(R"({"name":"fashion","version":"9","last_inference":0,"inference_count":0,)") !=
        std::string::npos);
  CHECK(json.substr(json.size() - 20) == R"(,"batch_stats":[]}]})");
  CHECK(EncodeModelStats("m", {}) == R"({"model_stats":[]})");
}
