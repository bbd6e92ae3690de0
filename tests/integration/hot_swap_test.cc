// Hot swap under load, dynamic batching, graceful shutdown, restart, and
// RunServe's signal handling.
// First: orders LibTorch (glog CHECK) before doctest.
#include "tests/learner/torch_doctest.h"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "daemon/serve.h"
#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "tests/integration/serving_fixture.h"

using namespace distilld;
using namespace distilld::testing;

namespace {

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t VersionOf(const std::string& body) {
  size_t p = body.find("\"model_version\":\"");
  if (p == std::string::npos) return -1;
  return std::stoll(body.substr(p + 17));
}

// Saves a student with `seed` under the state dir and returns its record.
storage::VersionRecord SaveVersion(const config::Config& c, int64_t id, uint64_t seed) {
  learner::ArchSpec spec;
  spec.hidden = c.model.architecture.hidden;
  auto m = learner::BuildModel(spec, seed);
  REQUIRE(m.ok());
  std::string rel = "models/test-" + std::to_string(seed) + ".pt";
  auto saved = learner::SaveModelAtomic(*m, (std::filesystem::path(c.storage.state_dir) / rel).string());
  REQUIRE(saved.ok());
  storage::VersionRecord r;
  r.id = id;
  r.path = rel;
  r.sha256 = saved->sha256;
  return r;
}

}  // namespace

TEST_CASE("serving: 50 hot swaps under load, zero failures, every answer from a version active then") {
  TempDir dir;
  auto cfg = TestConfig(dir);
  SUBCASE("batches on an inference thread") { cfg.batching.inference_threads = 1; }
  SUBCASE("batches inline on the I/O loops") { cfg.batching.inference_threads = 0; }
  SUBCASE("batches inline, one io_context shared by the I/O threads") {
    cfg.batching.inference_threads = 0;
    cfg.server.loop_per_thread = false;
  }
  auto d = StartDaemon(cfg);
  CHECK(d->batcher()->heartbeats().size() == static_cast<size_t>(cfg.batching.inference_threads));
  const uint16_t port = d->tcp_port();
  storage::VersionRecord a = SaveVersion(cfg, 0, 101);
  storage::VersionRecord b = SaveVersion(cfg, 0, 202);

  constexpr int kSwaps = 50;
  constexpr int kClients = 4;
  // Version v (2..51) became active during [publish_start[v], publish_end[v]]
  // and stopped being active during Publish(v+1).
  std::vector<int64_t> publish_start(kSwaps + 3, 0), publish_end(kSwaps + 3, INT64_MAX);
  publish_start[1] = 0;
  publish_end[1] = 0;
  struct Sample {
    int64_t sent, received, version;
  };
  std::mutex mu;
  std::vector<Sample> samples;
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::atomic<int> max_alive{0};

  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      TcpClient c(Loopback(port));
      std::string body = InferJson(1 + t % 2, "0.5", "FP32", "1,28,28", -1, "c" + std::to_string(t));
      std::vector<Sample> mine;
      while (!stop.load()) {
        int64_t sent = NowUs();
        auto r = c.Post("/v2/models/fashion/infer", body);
        int64_t received = NowUs();
        if (r.status != 200) {
          failures.fetch_add(1);
          MESSAGE("status " << r.status << " " << r.error << " " << r.body);
          continue;
        }
        mine.push_back({sent, received, VersionOf(r.body)});
        int alive = daemon::ServedModel::alive();
        int prev = max_alive.load();
        while (alive > prev && !max_alive.compare_exchange_weak(prev, alive)) {
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      samples.insert(samples.end(), mine.begin(), mine.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (int i = 0; i < kSwaps; ++i) {
    storage::VersionRecord r = i % 2 == 0 ? a : b;
    r.id = i + 2;
    publish_start[r.id] = NowUs();
    Status s = d->models()->Publish(r);
    publish_end[r.id] = NowUs();
    REQUIRE(s.ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop.store(true);
  for (auto& t : clients) t.join();

  CHECK(failures.load() == 0);
  CHECK(d->models()->Active()->version() == kSwaps + 1);
  CHECK(d->models()->swaps() == kSwaps + 1);
  CHECK(max_alive.load() <= 2);
  REQUIRE(samples.size() > 200u);
  std::set<int64_t> seen;
  int violations = 0;
  for (const Sample& s : samples) {
    REQUIRE(s.version >= 1);
    REQUIRE(s.version <= kSwaps + 1);
    seen.insert(s.version);
    // Active at some moment of [sent, received]: it became active before the
    // response arrived, and its successor was not fully in place before the
    // request was sent.
    bool ok = publish_start[s.version] <= s.received &&
              (s.version == kSwaps + 1 || publish_end[s.version + 1] >= s.sent);
    if (!ok) ++violations;
  }
  CHECK(violations == 0);
  CHECK(seen.size() > 10u);  // traffic really spanned many versions
  MESSAGE(samples.size() << " requests across " << seen.size() << " versions, max alive " << max_alive.load());
}

TEST_CASE("serving: concurrent clients are batched together") {
  TempDir dir;
  auto cfg = TestConfig(dir);
  cfg.batching.max_queue_delay_us = 3000;
  cfg.batching.max_batch_size = 32;
  auto d = StartDaemon(cfg);
  const uint16_t port = d->tcp_port();
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      TcpClient c(Loopback(port));
      std::string body = InferJson(1);
      for (int i = 0; i < 30; ++i) ok += c.Post("/v2/models/fashion/infer", body).status == 200;
    });
  }
  for (auto& t : clients) t.join();
  CHECK(ok.load() == 240);
  TcpClient c(Loopback(port));
  std::string m = c.Get("/metrics").body;
  double batches = MetricValue(m, "distilld_batch_size_count");
  double singles = MetricValue(m, R"(distilld_batch_size_bucket{le="1"})");
  double samples = MetricValue(m, "distilld_batch_size_sum");
  MESSAGE(batches << " batches, " << singles << " of size 1, " << samples << " samples");
  CHECK(samples >= 240);
  CHECK(batches > singles);          // some batch held more than one sample
  CHECK(samples / batches > 1.5);    // and not just by accident
}

TEST_CASE("serving: graceful shutdown answers in-flight requests, then refuses") {
  TempDir dir;
  auto cfg = TestConfig(dir);
  cfg.batching.max_queue_delay_us = 1'000'000;  // requests sit in the queue
  cfg.batching.max_batch_size = 64;
  cfg.batching.early_dispatch = false;  // it would run each request as it arrives; here they must queue
  auto d = StartDaemon(cfg);
  REQUIRE_FALSE(d->batcher()->limits().early_dispatch);
  const uint16_t port = d->tcp_port();
  std::vector<int> status(6, 0);
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; ++t) {
    clients.emplace_back([&, t] {
      TcpClient c(Loopback(port));
      auto r = c.Post("/v2/models/fashion/infer", InferJson(1));
      status[t] = r.status;
      if (r.status == 200) CHECK_FALSE(r.keep_alive);  // the last answer on this connection
    });
  }
  TcpClient idle(Loopback(port));
  REQUIRE(idle.Get("/v2/health/ready").status == 200);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (d->batcher()->queued_samples() < 6 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (d->batcher()->queued_samples() != 6) {
    TcpClient m(Loopback(port));
    MESSAGE("not all six requests queued; metrics:\n" << m.Get("/metrics").body);
  }
  REQUIRE(d->batcher()->queued_samples() == 6);
  auto start = std::chrono::steady_clock::now();
  CHECK(d->Shutdown());
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(4000));  // < drain_timeout_ms
  for (auto& t : clients) t.join();
  for (int s : status) CHECK(s == 200);
  CHECK(idle.ClosedByPeer());  // idle keep-alive connections were closed
  TcpClient late(Loopback(port));
  CHECK((!late.connected() || late.Get("/v2/health/live").status == 0));
}

TEST_CASE("serving: a restart serves the registry's active version without rebuilding") {
  TempDir dir;
  auto cfg = TestConfig(dir);
  std::string first_answer;
  {
    auto d = StartDaemon(cfg);
    TcpClient c(Loopback(d->tcp_port()));
    first_answer = c.Post("/v2/models/fashion/infer", InferJson(1)).body;
    auto versions = d->registry()->ListVersions();
    REQUIRE(versions.ok());
    CHECK(versions->size() == 1);
    CHECK(versions->at(0).path == "models/v000001.pt");
  }
  cfg.learner.seed = 999;  // a rebuild would produce different weights
  auto d = StartDaemon(cfg);
  TcpClient c(Loopback(d->tcp_port()));
  CHECK(c.Post("/v2/models/fashion/infer", InferJson(1)).body == first_answer);
  auto versions = d->registry()->ListVersions();
  REQUIRE(versions.ok());
  CHECK(versions->size() == 1);
}

TEST_CASE("serving: RunServe reloads on SIGHUP, keeps the old config when the new one is bad, drains on SIGTERM") {
  TempDir dir;
  const std::string state = dir.str("state");
  auto write_config = [&](const std::string& extra) {
    std::ofstream f(dir.str("distilld.yaml"));
    f << "server:\n  listen: \"127.0.0.1:0\"\n  max_body_bytes: " << extra << "\n"
      << "model:\n  architecture:\n    hidden: [16]\n"
      << "storage:\n  state_dir: \"" << state << "\"\n  sync: false\n";
  };
  write_config("100000");
  auto loaded = config::LoadConfig(dir.str("distilld.yaml"));
  INFO(loaded.status().ToString());
  REQUIRE(loaded.ok());

  std::atomic<daemon::Daemon*> running{nullptr};
  std::atomic<int> exit_code{-1};
  daemon::ServeOptions opts;
  opts.config_path = dir.str("distilld.yaml");
  opts.on_started = [&](daemon::Daemon& d) { running.store(&d); };
  std::thread serve([&] { exit_code.store(daemon::RunServe(*loaded, opts)); });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (running.load() == nullptr && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  daemon::Daemon* d = running.load();
  REQUIRE(d != nullptr);
  CHECK(d->server()->limits().max_body_bytes == 100000);

  write_config("200000");
  ::kill(::getpid(), SIGHUP);
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (d->server()->limits().max_body_bytes != 200000 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(d->server()->limits().max_body_bytes == 200000);

  write_config("-5");  // invalid: the running config stays
  ::kill(::getpid(), SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(d->server()->limits().max_body_bytes == 200000);
  CHECK(d->config().server.max_body_bytes == 200000);

  TcpClient c(Loopback(d->tcp_port()));
  CHECK(c.Post("/v2/models/fashion/infer", InferJson(1)).status == 200);
  ::kill(::getpid(), SIGTERM);
  serve.join();
  CHECK(exit_code.load() == 0);
}
