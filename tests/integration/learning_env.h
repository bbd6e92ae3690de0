// The online-learning integration tests' daemon: the synthetic task's
// teacher and student saved in a temp dir, LearningConfig (tweakable), a
// Daemon started on port 0, and helpers to read its JSON answers.
#pragma once

#include <rapidjson/document.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/daemon.h"
#include "tests/integration/http_test_client.h"
#include "tests/integration/learning_fixture.h"

namespace distilld::testing {

using http::verb;
using Headers = std::vector<std::pair<std::string, std::string>>;

inline rapidjson::Document Parse(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.c_str());
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

struct Env {
  TempDir dir;
  SyntheticTask task;
  config::Config config;
  std::unique_ptr<daemon::Daemon> daemon;

  explicit Env(std::function<void(config::Config&)> tweak = nullptr, daemon::DaemonOptions options = {}) {
    TrainAndSave(task, {0, 1, 2}, dir.str("teacher.pt"), 1);
    TrainAndSave(task, {0, 1}, dir.str("student.pt"), 2);
    config = LearningConfig(dir);
    if (tweak) tweak(config);
    daemon = daemon::Daemon::Create(config, options);
    Status s = daemon->Start();
    INFO(s.ToString());
    REQUIRE(s.ok());
  }
  TcpClient Client() { return TcpClient(Loopback(daemon->tcp_port())); }
  uint64_t Waiting() { return daemon->store()->CountIncoming(0).value(); }
};

// Polls a round until it is no longer running.
inline rapidjson::Document WaitRound(TcpClient& c, int64_t id) {
  for (int i = 0; i < 600; ++i) {
    Reply r = c.Get("/v1/learner/rounds/" + std::to_string(id));
    REQUIRE(r.status == 200);
    rapidjson::Document d = Parse(r.body);
    const std::string outcome = d["outcome"].GetString();
    if (outcome != "running" && outcome != "queued") return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("round " << id << " did not finish");
  return {};
}

// Asks for a round (POST /v1/learner/rounds must answer 202) and polls it
// to its outcome.
inline rapidjson::Document RequestRound(TcpClient& c) {
  Reply start = c.Post("/v1/learner/rounds", "{}");
  INFO(start.body);
  REQUIRE(start.status == 202);
  return WaitRound(c, Parse(start.body)["round_id"].GetInt64());
}

// What a client does to teach the daemon: posts a /v1/samples body (which
// must be acknowledged), asks for a round and waits for its outcome.
inline rapidjson::Document PostSamplesAndRound(TcpClient& c, const std::string& samples_body) {
  Reply posted = c.Post("/v1/samples", samples_body);
  INFO(posted.body);
  REQUIRE(posted.status == 200);
  return RequestRound(c);
}

}  // namespace distilld::testing
