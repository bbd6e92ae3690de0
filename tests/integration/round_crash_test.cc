// Crashes in the middle of a learner round, in the real `distilld serve`
// process: SIGKILL (a crash point, common/crash_point.h) in the teacher
// pass, in training, between a version's file and its registry row, between
// the row and the activation, after the swap and after the consuming write.
// After a restart on the same state dir the daemon serves a version that
// verifies, every round has a terminal outcome, and every sample is trained
// on by exactly one served round (or waits for the next one): none is lost,
// none counted twice.
#include <rapidjson/document.h>
#include <sys/wait.h>

#include <csignal>
#include <fstream>
#include <string>

#include "tests/integration/child_daemon.h"
#include "tests/integration/http_test_client.h"
#include "tests/integration/learning_fixture.h"
#include "tests/integration/rounds_client.h"
#include "tests/learner/torch_doctest.h"

namespace distilld::testing {
namespace {

constexpr int kSamples = 300;

void WriteConfig(const TempDir& dir, const std::string& path, const std::string& state) {
  std::ofstream(path)
      << "server:\n  listen: \"127.0.0.1:0\"\n"
      << "model:\n  input_shape: [1, 4, 4]\n  classes: 3\n"
      << "  teacher: \"" << dir.str("teacher.pt") << "\"\n"
      << "  student: \"" << dir.str("student.pt") << "\"\n"
      << "  architecture:\n    hidden: [32]\n"
      << "storage:\n  state_dir: \"" << state << "\"\n"
      << "replay:\n  holdout_fraction: 0.2\n"
      << "learner:\n  trigger_count: 1000000\n  trigger_interval_s: 3600\n"
      << "  idle_priority: false\n  yield_above_rps: 0\n  epochs: 4\n  batch_size: 32\n"
      << "  learning_rate: 0.01\n  alpha: 0.7\n";
}

rapidjson::Document Learner(TcpClient& c) {
  Reply r = c.Get("/v1/learner");
  REQUIRE(r.status == 200);
  return Parse(r.body);
}

struct Point {
  const char* name;
  bool decided;  // the crash comes after the round's version was decided
};

TEST_CASE(
    "a SIGKILL anywhere in a round loses no sample, counts none twice and serves a verified "
    "version") {
  TempDir dir;
  SyntheticTask task;
  TrainAndSave(task, {0, 1, 2}, dir.str("teacher.pt"), 1);
  TrainAndSave(task, {0, 1}, dir.str("student.pt"), 2);
  std::mt19937_64 rng(11);
  std::vector<float> x;
  std::vector<int64_t> y;
  task.Make(kSamples, -1, rng, &x, &y);  // classes 0, 1 and the new 2, labelled
  const std::string body = SamplesJson(x, y);

  for (Point p : {Point{"round.teacher_pass", false}, Point{"round.training", false},
                  Point{"version.file_saved", false}, Point{"round.version_registered", false},
                  Point{"round.decided", true}, Point{"round.consumed", true}}) {
    const std::string point = p.name;
    CAPTURE(point);
    const std::string state = dir.str(std::string("state_") + p.name);
    const std::string cfg = dir.str(std::string(p.name) + ".yaml");
    WriteConfig(dir, cfg, state);
    int64_t round = 0;
    {
      ChildProcess child;
      const std::string log = dir.str(std::string(p.name) + ".crash.log");
      REQUIRE(StartServe(child, cfg, log, {{"DISTILLD_CRASH_AT", std::string(p.name)}}));
      const uint16_t port = WaitForPort(log);
      REQUIRE(port != 0);
      TcpClient c(Loopback(port));
      REQUIRE(c.Post("/v1/samples", body).status == 200);
      Reply start = c.Post("/v1/learner/rounds", "{}");
      REQUIRE(start.status == 202);
      round = Parse(start.body)["round_id"].GetInt64();
      std::optional<int> status = child.Wait(std::chrono::seconds(120));
      INFO(ReadText(log));
      REQUIRE(status.has_value());
      CHECK(WIFSIGNALED(*status));
      CHECK(WTERMSIG(*status) == SIGKILL);
      CHECK(ReadText(log).find(std::string("crash point ") + p.name + " reached") !=
            std::string::npos);
    }

    ChildProcess child;
    const std::string log = dir.str(std::string(p.name) + ".restart.log");
    REQUIRE(StartServe(child, cfg, log));
    const uint16_t port = WaitForPort(log);
    INFO(ReadText(log));
    REQUIRE(port != 0);
    TcpClient c(Loopback(port));
    CHECK(c.Get("/v2/health/ready").status == 200);

    // The interrupted round has a terminal outcome, and the one it would
    // have had if its version was decided.
    rapidjson::Document r1 = WaitRound(c, round, 1200);
    const std::string outcome = r1["outcome"].GetString();
    INFO(r1["reason"].GetString());
    CHECK(outcome == (p.decided ? "promoted" : "aborted"));
    // Served: the promoted version if the round got that far, else version 1.
    const int64_t active = p.decided ? r1["candidate_version"].GetInt64() : 1;
    const float zero[kTaskPixels] = {};
    Reply served = c.Post("/v2/models/fashion/infer", Infer4x4(zero, "after"));
    REQUIRE(served.status == 200);
    CHECK(std::string(Parse(served.body)["model_version"].GetString()) ==
          std::to_string(active));
    // No version is left a candidate: each one was activated or rejected.
    Reply versions = c.Get("/v1/models/fashion/versions");
    REQUIRE(versions.status == 200);
    rapidjson::Document vs = Parse(versions.body);
    for (const auto& v : vs["versions"].GetArray())
      CHECK(std::string(v["status"].GetString()) != "candidate");

    if (!p.decided) {
      // Nothing was learned from the samples: the next round learns them.
      const int64_t held_before = Learner(c)["holdout"]["size"].GetInt64();
      Reply again = c.Post("/v1/learner/rounds", "{}");
      INFO(again.body);
      REQUIRE(again.status == 202);
      rapidjson::Document r2 = WaitRound(c, Parse(again.body)["round_id"].GetInt64(), 1200);
      CHECK(std::string(r2["outcome"].GetString()) == "promoted");
      // Samples already held out by the interrupted round are not read again.
      CHECK(r2["samples_new"].GetInt64() + held_before == kSamples);
    } else {
      // The interrupted round consumed them: a new round has nothing to learn.
      CHECK(c.Post("/v1/learner/rounds", "{}").status == 409);
    }
    // Every sample is either held out or in the replay buffer, once.
    rapidjson::Document l = Learner(c);
    CHECK(l["samples_waiting"].GetInt64() == 0);
    CHECK(l["holdout"]["size"].GetInt64() + l["buffer"]["size"].GetInt64() == kSamples);
    CHECK(l["buffer"]["seen"].GetInt64() + l["holdout"]["size"].GetInt64() == kSamples);
  }
}

}  // namespace
}  // namespace distilld::testing
