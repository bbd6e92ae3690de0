// The /v1 API when things go wrong for a user: a disk that fills up under
// the state dir, version files piling up over months, and an event poller
// that falls behind.
#include <rapidjson/document.h>

#include <algorithm>
#include <filesystem>
#include <atomic>
#include <random>
#include <string>
#include <vector>

#include "tests/integration/learning_env.h"

namespace distilld::testing {
namespace {

constexpr uint64_t kMiB = 1u << 20;

std::string Batch(const SyntheticTask& task, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> x;
  std::vector<int64_t> y;
  task.Make(n, -1, rng, &x, &y);
  return SamplesJson(x, y);
}

TEST_CASE("below storage.min_free_mb ingest and rounds are refused with a message, serving goes on, and it recovers") {
  auto free = std::make_shared<std::atomic<uint64_t>>(1024 * kMiB);
  daemon::DaemonOptions options;
  options.free_bytes_probe = [free]() -> Result<uint64_t> { return free->load(); };
  Env env(nullptr, options);  // the default floor, 256 MiB
  TcpClient c = env.Client();
  REQUIRE(c.Post("/v1/samples", Batch(env.task, 60, 1)).status == 200);
  const uint64_t stored = env.daemon->store()->IncomingCount();

  free->store(100 * kMiB);  // the disk fills up from elsewhere
  Reply refused = c.Post("/v1/samples", Batch(env.task, 60, 2));
  CHECK(refused.status == 503);
  CHECK(refused.body.find("disk nearly full") != std::string::npos);
  CHECK(refused.body.find("storage.min_free_mb keeps 256 MiB free") != std::string::npos);
  CHECK(env.daemon->store()->IncomingCount() == stored);  // nothing half-stored
  // Inference needs no disk.
  const float x[kTaskPixels] = {};
  CHECK(c.Post("/v2/models/fashion/infer", Infer4x4(x, "full")).status == 200);
  CHECK(c.Get("/v2/health/ready").status == 200);
  // A round cannot consume or save anything: it fails, saying why, and
  // leaves the samples for later.
  rapidjson::Document r = RequestRound(c);
  CHECK(std::string(r["outcome"].GetString()) == "failed");
  CHECK(std::string(r["reason"].GetString()).find("disk nearly full") != std::string::npos);
  CHECK(env.daemon->store()->IncomingCount() == stored);
  Reply metrics = c.Get("/metrics");
  CHECK(metrics.body.find("distilld_storage_free_bytes " + std::to_string(100 * kMiB) + "\n") != std::string::npos);
  CHECK(metrics.body.find("distilld_storage_min_free_bytes " + std::to_string(256 * kMiB) + "\n") !=
        std::string::npos);

  // An operator lowers the floor with a reload: ingest works again at once.
  config::Config lowered = env.daemon->config();
  lowered.storage.min_free_mb = 64;
  REQUIRE(env.daemon->Reload(lowered).ok());
  CHECK(c.Post("/v1/samples", Batch(env.task, 60, 3)).status == 200);
  // Space freed: a round trains, saves and promotes.
  free->store(1024 * kMiB);
  rapidjson::Document ok = RequestRound(c);
  CHECK(std::string(ok["outcome"].GetString()) == "promoted");
  CHECK(ok["samples_new"].GetInt64() == 120);
}

TEST_CASE("the retention policy deletes old version files after each round; their rows stay, unactivatable") {
  Env env([](config::Config& c) {
    c.learner.keep_versions = 1;         // the newest version's file ...
    c.learner.keep_served_versions = 1;  // ... and the newest served one's
  });
  TcpClient c = env.Client();
  for (uint64_t round = 0; round < 3; ++round) PostSamplesAndRound(c, Batch(env.task, 90, 10 + round));
  Reply vs = c.Get("/v1/models/fashion/versions");
  REQUIRE(vs.status == 200);
  rapidjson::Document vd = Parse(vs.body);
  REQUIRE(vd["versions"].Size() == 4);  // the initial student and one per round: every row stays
  int kept = 0;
  int64_t removed = 0;
  for (const auto& v : vd["versions"].GetArray()) {
    const int64_t id = v["id"].GetInt64();
    CAPTURE(id);
    const bool file = std::filesystem::exists(env.config.storage.state_dir + "/models/v00000" + std::to_string(id) + ".pt");
    CHECK(v["file_kept"].GetBool() == file);
    kept += file;
    if (std::string(v["status"].GetString()) == "active" || id == 4) CHECK(file);
    if (!file) removed = id;
  }
  CHECK(kept <= 2);
  REQUIRE(removed != 0);
  Reply refused = c.Post("/v1/models/fashion/versions/" + std::to_string(removed) + "/activate", "{}");
  CHECK(refused.status == 409);
  CHECK(refused.body.find("removed by the retention policy") != std::string::npos);
  CHECK(c.Get("/v2/health/ready").status == 200);
  // However many versions were made, at most two are ever in memory.
  const std::string metrics = c.Get("/metrics").body;
  const size_t loaded = metrics.find("\ndistilld_models_loaded ");
  REQUIRE(loaded != std::string::npos);
  const int in_memory = std::stoi(metrics.substr(loaded + 24));
  CHECK(in_memory >= 1);
  CHECK(in_memory <= 2);
  Reply events = c.Get("/v1/events?limit=50");
  CHECK(events.body.find("\"kind\":\"retention\"") != std::string::npos);
}

TEST_CASE("GET /v1/events?after= pages forward: a poller with a small page sees every event once") {
  Env env;
  TcpClient c = env.Client();
  Reply latest = c.Get("/v1/events?limit=5");
  REQUIRE(latest.status == 200);
  CHECK(Parse(latest.body)["events"].Size() >= 1);
  CHECK_FALSE(Parse(latest.body).HasMember("more"));
  for (int i = 0; i < 3; ++i) {
    REQUIRE(env.daemon->registry()->LogEvent(storage::EventKind::kConfigReload, "page " + std::to_string(i)).ok());
  }
  const int64_t newest = env.daemon->registry()->ListEvents(1).value()[0].id;
  int64_t cursor = 0, pages = 0;
  std::vector<int64_t> seen;
  for (bool more = true; more && pages < 100; ++pages) {
    Reply page = c.Get("/v1/events?after=" + std::to_string(cursor) + "&limit=1");
    REQUIRE(page.status == 200);
    rapidjson::Document pd = Parse(page.body);
    REQUIRE(pd["events"].Size() == 1);
    cursor = pd["events"][0]["id"].GetInt64();
    seen.push_back(cursor);
    more = pd["more"].GetBool();
  }
  CHECK(seen.back() == newest);
  CHECK(static_cast<int64_t>(seen.size()) == newest);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
  CHECK(Parse(c.Get("/v1/events?after=" + std::to_string(newest)).body)["events"].Size() == 0);
  for (const char* bad : {"/v1/events?limit=0", "/v1/events?limit=1001", "/v1/events?limit=x", "/v1/events?after=-1"}) {
    CAPTURE(bad);
    Reply r = c.Get(bad);
    CHECK(r.status == 400);
    CHECK(r.body.find("query parameter '") != std::string::npos);
  }
}

}  // namespace
}  // namespace distilld::testing
