// The online-learning integration tests' daemon: the synthetic task's
// teacher and student saved in a temp dir, LearningConfig (tweakable), a
// Daemon started on port 0, and helpers to read its JSON answers.
#pragma once

#include <rapidjson/document.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "daemon/daemon.h"
#include "tests/integration/http_test_client.h"
#include "tests/integration/learning_fixture.h"
#include "tests/integration/rounds_client.h"

namespace distilld::testing {

using http::verb;
using Headers = std::vector<std::pair<std::string, std::string>>;

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
