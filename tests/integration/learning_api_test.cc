// The online-learning API over real sockets: ingest, auth, feedback, learner
// control, versions and rollback, end to end under concurrent inference.
#include "tests/integration/learning_env.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <chrono>
#include <thread>
#include <vector>

#include "daemon/daemon.h"
#include "tests/integration/http_test_client.h"

namespace distilld::testing {
namespace {

// Accuracy of the served model on class `cls`, and the version that answered.
std::pair<double, std::string> ClassAccuracy(TcpClient& c, const SyntheticTask& task, int cls) {
  std::mt19937_64 rng(99);
  std::vector<float> x;
  std::vector<int64_t> y;
  task.Make(40, cls, rng, &x, &y);
  int correct = 0;
  std::string version;
  for (size_t i = 0; i < y.size(); ++i) {
    Reply r = c.Post("/v2/models/fashion/infer", Infer4x4(x.data() + i * kTaskPixels, "acc"));
    REQUIRE(r.status == 200);
    rapidjson::Document d = Parse(r.body);
    version = d["model_version"].GetString();
    if (d["outputs"][0]["data"][0].GetInt64() == y[i]) ++correct;
  }
  return {static_cast<double>(correct) / static_cast<double>(y.size()), version};
}

TEST_CASE("POST /v1/samples stores a batch durably and rejects a bad one whole") {
  Env env;
  TcpClient c = env.Client();
  std::mt19937_64 rng(1);
  std::vector<float> x;
  std::vector<int64_t> y;
  env.task.Make(6, -1, rng, &x, &y);
  y[1] = -1;  // unlabelled
  Reply ok = c.Post("/v1/samples", SamplesJson(x, y));
  REQUIRE(ok.status == 200);
  rapidjson::Document d = Parse(ok.body);
  CHECK(d["accepted"].GetInt() == 6);
  CHECK(d["last_id"].GetUint64() - d["first_id"].GetUint64() == 5);
  CHECK(env.Waiting() == 6);
  auto stored = env.daemon->store()->GetIncoming(d["first_id"].GetUint64() + 1);
  REQUIRE(stored.ok());
  CHECK_FALSE(stored->label.has_value());
  CHECK(stored->shape == std::vector<int64_t>{1, 4, 4});

  SUBCASE("a NaN in sample 3 rejects the batch, naming the sample") {
    std::vector<float> bad = x;
    bad[3 * kTaskPixels + 2] = std::nanf("");
    Reply r = c.Post("/v1/samples", SamplesJson(bad, y));
    CHECK(r.status == 400);
    CHECK(r.body.find("sample 3") != std::string::npos);
    CHECK(env.Waiting() == 6);
  }
  SUBCASE("a label out of range rejects the batch, naming the sample") {
    std::vector<int64_t> bad = y;
    bad[4] = 7;
    Reply r = c.Post("/v1/samples", SamplesJson(x, bad));
    CHECK(r.status == 400);
    CHECK(r.body.find("sample 4") != std::string::npos);
    CHECK(env.Waiting() == 6);
  }
  SUBCASE("a wrong shape or a missing input is a 400 naming the field") {
    std::string body = SamplesJson(x, y);
    std::string wrong = body;
    wrong.replace(wrong.find(",1,4,4]"), 7, ",1,2,8]");
    Reply r = c.Post("/v1/samples", wrong);
    CHECK(r.status == 400);
    CHECK(r.body.find("shape") != std::string::npos);
    Reply r2 = c.Post("/v1/samples", R"({"inputs":[]})");
    CHECK(r2.status == 400);
    Reply r3 = c.Post("/v1/samples", "not json");
    CHECK(r3.status == 400);
    CHECK(env.Waiting() == 6);
  }
}

TEST_CASE("bearer token: required on /v1 POSTs, compared exactly; GETs stay open") {
  TempDir tokens;
  WriteFile(tokens.str("token"), "s3cret-token\n", 0600);
  Env env([&](config::Config& c) { c.server.auth_token_file = tokens.str("token"); });
  TcpClient c = env.Client();
  std::mt19937_64 rng(1);
  std::vector<float> x;
  std::vector<int64_t> y;
  env.task.Make(2, 0, rng, &x, &y);
  const std::string body = SamplesJson(x, y);
  CHECK(c.Post("/v1/samples", body).status == 401);
  CHECK(c.Request(verb::post, "/v1/samples", body, "application/json", std::nullopt,
                  Headers{{"Authorization", "Bearer s3cret-tokeN"}})
            .status == 401);
  CHECK(c.Request(verb::post, "/v1/samples", body, "application/json", std::nullopt,
                  Headers{{"Authorization", "Bearer s3cret-token-longer"}})
            .status == 401);
  CHECK(env.Waiting() == 0);
  CHECK(c.Request(verb::post, "/v1/samples", body, "application/json", std::nullopt,
                  Headers{{"Authorization", "Bearer s3cret-token"}})
            .status == 200);
  CHECK(c.Post("/v1/models/fashion/versions/1/activate", "{}").status == 401);
  CHECK(c.Post("/v1/learner/rounds", "{}").status == 401);
  CHECK(c.Get("/v1/learner").status == 200);
  // Inference stays open unless server.auth_inference is set.
  CHECK(c.Post("/v2/models/fashion/infer", Infer4x4(x.data(), "a")).status == 200);
}

TEST_CASE("a token file readable by others refuses start-up with a clear message") {
  TempDir dir;
  WriteFile(dir.str("token"), "abc\n", 0644);
  config::Config c;
  c.server.listen = "127.0.0.1:0";
  c.server.auth_token_file = dir.str("token");
  c.storage.state_dir = dir.str("state");
  c.learner.enabled = false;
  auto d = daemon::Daemon::Create(c);
  Status s = d->Start();
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK(s.message().find("accessible by others") != std::string::npos);
}

TEST_CASE("auth_inference extends the token to inference") {
  TempDir tokens;
  WriteFile(tokens.str("token"), "tok", 0600);
  Env env([&](config::Config& c) {
    c.server.auth_token_file = tokens.str("token");
    c.server.auth_inference = true;
  });
  TcpClient c = env.Client();
  std::vector<float> x(kTaskPixels, 0.5f);
  CHECK(c.Post("/v2/models/fashion/infer", Infer4x4(x.data(), "a")).status == 401);
  CHECK(c.Request(verb::post, "/v2/models/fashion/infer", Infer4x4(x.data(), "a"), "application/json",
                  std::nullopt, Headers{{"Authorization", "Bearer tok"}})
            .status == 200);
}

TEST_CASE("capture stores inference inputs and feedback labels them") {
  Env env([](config::Config& c) { c.capture.fraction = 1.0; });
  TcpClient c = env.Client();
  std::vector<float> x(kTaskPixels, 0.3f);
  REQUIRE(c.Post("/v2/models/fashion/infer", Infer4x4(x.data(), "req-42")).status == 200);
  REQUIRE(c.Post("/v2/models/fashion/infer", Infer4x4(x.data(), "req-43")).status == 200);
  // Capture is written off the request path: wait for it.
  for (int i = 0; i < 200 && env.Waiting() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(env.Waiting() == 2);
  auto stored = env.daemon->store()->ReadIncoming(0, 10);
  REQUIRE(stored.ok());
  CHECK(stored->at(0).sample.source == storage::SampleSource::kCapture);
  CHECK_FALSE(stored->at(0).sample.label.has_value());

  Reply fb = c.Post("/v1/feedback", R"({"id":"req-42","label":2})");
  REQUIRE(fb.status == 200);
  bool labelled = false;
  auto after = env.daemon->store()->ReadIncoming(0, 10);
  REQUIRE(after.ok());
  for (const auto& s : *after) {
    if (s.sample.request_id == "req-42") {
      CHECK(s.sample.label == std::optional<int64_t>(2));
      CHECK(s.sample.source == storage::SampleSource::kFeedback);
      labelled = true;
    } else {
      CHECK_FALSE(s.sample.label.has_value());
    }
  }
  CHECK(labelled);
  CHECK(c.Post("/v1/feedback", R"({"id":"nope","label":1})").status == 404);
  CHECK(c.Post("/v1/feedback", R"({"id":"req-43","label":9})").status == 400);
  CHECK(c.Post("/v1/feedback", R"({"label":1})").status == 400);
  Reply metrics = c.Get("/metrics");
  CHECK(metrics.body.find("distilld_feedback_labels_total 1") != std::string::npos);
}

TEST_CASE("learner control, versions and activation errors") {
  Env env;
  TcpClient c = env.Client();
  // No samples: nothing to learn from, and the answer says what to do.
  Reply none = c.Post("/v1/learner/rounds", "{}");
  CHECK(none.status == 409);
  CHECK(none.body.find("send samples with POST /v1/samples first") != std::string::npos);
  Reply l = c.Get("/v1/learner");
  REQUIRE(l.status == 200);
  rapidjson::Document ld = Parse(l.body);
  CHECK(ld["enabled"].GetBool());
  CHECK(std::string(ld["state"].GetString()) == "idle");
  CHECK(ld["buffer"]["capacity"].GetUint64() == 5000);  // replay.capacity default

  std::mt19937_64 rng(3);
  std::vector<float> x;
  std::vector<int64_t> y;
  env.task.Make(300, -1, rng, &x, &y);
  REQUIRE(c.Post("/v1/samples", SamplesJson(x, y)).status == 200);
  Reply start = c.Post("/v1/learner/rounds", "{}");
  REQUIRE(start.status == 202);
  const int64_t round = Parse(start.body)["round_id"].GetInt64();
  // Asked again at once: the same round, whether it is still queued (202,
  // joined) or already running with every sample (409 naming it).
  Reply again = c.Post("/v1/learner/rounds", "{}");
  REQUIRE((again.status == 202 || again.status == 409));
  rapidjson::Document ad = Parse(again.body);
  CHECK(ad["round_id"].GetInt64() == round);
  if (again.status == 202) CHECK(ad["joined"].GetBool());
  rapidjson::Document rd = WaitRound(c, round);
  CHECK(rd["samples_new"].GetInt64() > 0);
  CHECK(std::string(rd["trigger"].GetString()) == "api");
  // Afterwards: 409, naming the round that took the samples.
  Reply after = c.Post("/v1/learner/rounds", "{}");
  CHECK(after.status == 409);
  rapidjson::Document afd = Parse(after.body);
  CHECK(afd["round_id"].GetInt64() == round);
  CHECK(std::string(afd["error"].GetString()) ==
        "no new samples: round " + std::to_string(round) + " (trigger api) took every sample up to id 300; poll GET "
        "/v1/learner/rounds/" + std::to_string(round));
  Reply unknown = c.Get("/v1/learner/rounds/999");
  CHECK(unknown.status == 404);
  CHECK(unknown.body.find("round 999 not found (the latest round is " + std::to_string(round) + ")") !=
        std::string::npos);
  Reply bad = c.Get("/v1/learner/rounds/abc");
  CHECK(bad.status == 400);
  CHECK(bad.body.find("got 'abc'") != std::string::npos);

  Reply vs = c.Get("/v1/models/fashion/versions");
  REQUIRE(vs.status == 200);
  rapidjson::Document vd = Parse(vs.body);
  REQUIRE(vd["versions"].Size() == 2);
  CHECK(vd["versions"][1]["parent"].GetInt64() == 1);
  CHECK(c.Get("/v1/models/other/versions").status == 404);
  CHECK(c.Post("/v1/models/fashion/versions/77/activate", "{}").status == 404);
  CHECK(c.Post("/v1/models/fashion/versions/x1/activate", "{}").status == 400);
  CHECK(c.Post("/v1/models/../versions/1/activate", "{}").status == 404);
  Reply ev = c.Get("/v1/events?limit=5");
  REQUIRE(ev.status == 200);
  CHECK(Parse(ev.body)["events"].Size() >= 1);

  // A rejected version cannot be activated.
  storage::VersionRecord rejected;
  rejected.path = "models/v000001.pt";
  rejected.status = storage::VersionStatus::kRejected;
  rejected.note = "test";
  int64_t rid = env.daemon->registry()->AddVersion(rejected).value();
  Reply r = c.Post("/v1/models/fashion/versions/" + std::to_string(rid) + "/activate", "{}");
  CHECK(r.status == 409);
  CHECK(r.body.find("rejected") != std::string::npos);
}

TEST_CASE("a reload applies training fields from the next round and names the fields that need a restart") {
  Env env([](config::Config& c) {
    c.learner.balanced_finetune_epochs = 0;  // steps = learner.max_steps exactly
    c.learner.max_steps = 5;
  });
  TcpClient c = env.Client();
  std::mt19937_64 rng(8);
  auto round_steps = [&] {
    std::vector<float> x;
    std::vector<int64_t> y;
    env.task.Make(200, -1, rng, &x, &y);
    return PostSamplesAndRound(c, SamplesJson(x, y))["loss"]["steps"].GetInt64();
  };
  CHECK(round_steps() == 5);

  config::Config next = env.config;
  next.learner.max_steps = 9;          // next round
  next.replay.capacity = 9000;         // restart
  next.learner.threads = 2;            // restart
  next.server.max_body_bytes = 50000;  // at once
  REQUIRE(env.daemon->Reload(next).ok());
  CHECK(env.daemon->server()->limits().max_body_bytes == 50000);
  CHECK(env.daemon->config().learner.max_steps == 9);
  CHECK(env.daemon->config().replay.capacity == 5000);  // what runs
  CHECK(env.daemon->config().learner.threads == 1);
  CHECK(round_steps() == 9);
  Reply l = c.Get("/v1/learner");
  REQUIRE(l.status == 200);
  CHECK(Parse(l.body)["buffer"]["capacity"].GetUint64() == 5000);

  Reply ev = c.Get("/v1/events?limit=50");
  REQUIRE(ev.status == 200);
  std::string applied, restart;
  // The document must outlive the loop: a temporary's array would dangle.
  const rapidjson::Document events = Parse(ev.body);
  for (const auto& e : events["events"].GetArray()) {
    const std::string kind = e["kind"].GetString();
    if (kind == "config_reload") applied = e["message"].GetString();
    if (kind == "config_restart_needed") restart = e["message"].GetString();
  }
  CHECK(applied == "server.max_body_bytes: 16777216 -> 50000; learner.max_steps: 5 -> 9 (from the next round)");
  CHECK(restart ==
        "changed in the file, applied after a restart: replay.capacity: 5000 -> 9000; learner.threads: 1 -> 2");

  // A value the learner refuses (LoadConfig would have caught it): nothing
  // is applied, and the error names the field.
  config::Config bad = env.daemon->config();
  bad.learner.epochs = 0;
  bad.server.max_body_bytes = 60000;
  Status refused = env.daemon->Reload(bad);
  CHECK(refused.code() == StatusCode::kInvalidArgument);
  CHECK(refused.message().find("learner.epochs") != std::string::npos);
  CHECK(env.daemon->server()->limits().max_body_bytes == 50000);
  CHECK(env.daemon->config().learner.epochs == env.config.learner.epochs);
}

TEST_CASE("every round id POST /v1/learner/rounds returns reaches an outcome while count triggers fire") {
  Env env([](config::Config& c) {
    c.learner.trigger_count = 30;  // automatic rounds keep starting
    c.learner.epochs = 2;
  });
  std::atomic<bool> done{false};
  std::thread feeder([&] {
    TcpClient fc = env.Client();
    std::mt19937_64 rng(21);
    for (int i = 0; i < 60; ++i) {
      std::vector<float> x;
      std::vector<int64_t> y;
      env.task.Make(25, -1, rng, &x, &y);
      CHECK(fc.Post("/v1/samples", SamplesJson(x, y)).status == 200);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    done = true;
  });
  std::mutex mu;
  std::set<int64_t> returned, named;
  std::atomic<int> other{0};
  std::vector<std::thread> clients;
  for (int k = 0; k < 2; ++k) {
    clients.emplace_back([&] {
      TcpClient rc = env.Client();
      while (!done) {
        Reply r = rc.Post("/v1/learner/rounds", "{}");
        rapidjson::Document d;
        d.Parse(r.body.c_str());
        {
          std::lock_guard<std::mutex> lock(mu);
          if (r.status == 202 && !d.HasParseError() && d.HasMember("round_id")) {
            returned.insert(d["round_id"].GetInt64());
          } else if (r.status == 409 && !d.HasParseError()) {
            if (d.HasMember("round_id")) named.insert(d["round_id"].GetInt64());
          } else {
            ++other;
          }
        }
        // Not flat out: a request queued ahead of every automatic trigger
        // would leave the triggers nothing, and this test wants both kinds.
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
      }
    });
  }
  feeder.join();
  for (auto& t : clients) t.join();
  CHECK(other == 0);
  REQUIRE_FALSE(returned.empty());
  TcpClient c = env.Client();
  std::set<std::string> triggers;
  for (int64_t id : returned) {
    rapidjson::Document d = WaitRound(c, id);
    const std::string outcome = d["outcome"].GetString();
    CAPTURE(id);
    CAPTURE(outcome);
    CHECK((outcome == "promoted" || outcome == "rejected" || outcome == "skipped"));
    CHECK(d["ended_us"].IsInt64());
  }
  // A 409 names a round that exists and also ends.
  for (int64_t id : named) CHECK(WaitRound(c, id)["ended_us"].IsInt64());
  auto rounds = env.daemon->registry()->ListRounds(1000);
  REQUIRE(rounds.ok());
  for (const auto& r : *rounds) triggers.insert(r.trigger);
  CHECK(triggers.count("count") == 1);
  CHECK(triggers.count("api") == 1);
  MESSAGE(returned.size() << " ids returned, " << rounds->size() << " rounds in all");
}

TEST_CASE("parameters.holdout seeds the held-out set with labelled samples, never trained on") {
  Env env;
  TcpClient c = env.Client();
  std::mt19937_64 rng(31);
  std::vector<float> x;
  std::vector<int64_t> y;
  env.task.Make(30, -1, rng, &x, &y);
  auto with_params = [](std::string body, const std::string& params) {
    return body.insert(body.size() - 1, ",\"parameters\":" + params);
  };
  Reply r = c.Post("/v1/samples", with_params(SamplesJson(x, y), R"({"holdout":true})"));
  REQUIRE(r.status == 200);
  rapidjson::Document d = Parse(r.body);
  CHECK(d["accepted"].GetInt() == 30);
  CHECK(d["holdout"].GetBool());
  CHECK(d["holdout_size"].GetUint64() == 30);
  CHECK(env.Waiting() == 0);  // not in "incoming": never trained on
  CHECK(env.daemon->holdout()->size() == 30);
  CHECK(env.daemon->holdout()->ClassCounts().at(0) == 10);
  rapidjson::Document learner = Parse(c.Get("/v1/learner").body);
  CHECK(learner["holdout"]["size"].GetUint64() == 30);
  CHECK(learner["samples_waiting"].GetUint64() == 0);

  std::vector<int64_t> unlabelled = y;
  unlabelled[4] = -1;
  Reply u = c.Post("/v1/samples", with_params(SamplesJson(x, unlabelled), R"({"holdout":true})"));
  CHECK(u.status == 400);
  CHECK(u.body.find("sample 4: inputs[1].data[4]: held-out samples need a label") != std::string::npos);
  Reply b = c.Post("/v1/samples", with_params(SamplesJson(x, y), R"({"holdout":"yes"})"));
  CHECK(b.status == 400);
  CHECK(b.body.find("parameters.holdout: expected a boolean") != std::string::npos);
  CHECK(env.daemon->holdout()->size() == 30);
  // holdout false is an ordinary ingest.
  Reply plain = c.Post("/v1/samples", with_params(SamplesJson(x, y), R"({"holdout":false})"));
  CHECK(plain.status == 200);
  CHECK(env.Waiting() == 30);
  CHECK(Parse(c.Get("/v1/learner").body)["samples_waiting"].GetUint64() == 30);
}

TEST_CASE("end to end: learn a new class under load, then roll back, with zero failed requests") {
  Env env;
  TcpClient c = env.Client();
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0}, answered{0};
  std::thread load([&] {
    TcpClient lc(Loopback(env.daemon->tcp_port()));
    std::vector<float> x(kTaskPixels, 0.5f);
    while (!stop) {
      Reply r = lc.Post("/v2/models/fashion/infer", Infer4x4(x.data(), "load"));
      if (r.status != 200) ++failed;
      ++answered;
    }
  });

  auto [before, v_before] = ClassAccuracy(c, env.task, 2);
  CHECK(v_before == "1");
  CHECK(before < 0.2);  // the first student never saw class 2

  std::mt19937_64 rng(4);
  std::vector<float> x;
  std::vector<int64_t> y;
  env.task.Make(400, -1, rng, &x, &y);  // classes 0, 1 and the new class 2, labelled
  rapidjson::Document rd = PostSamplesAndRound(c, SamplesJson(x, y));
  INFO(rd["reason"].GetString());
  REQUIRE(std::string(rd["outcome"].GetString()) == "promoted");

  auto [after, v_after] = ClassAccuracy(c, env.task, 2);
  CHECK(v_after == "2");
  CHECK(after > 0.8);

  Reply rb = c.Post("/v1/models/fashion/versions/1/activate", "{}");
  REQUIRE(rb.status == 200);
  CHECK(Parse(rb.body)["previous"].GetInt64() == 2);
  auto [rolled, v_rolled] = ClassAccuracy(c, env.task, 2);
  CHECK(v_rolled == "1");
  CHECK(rolled == doctest::Approx(before));
  CHECK(env.daemon->registry()->ActiveVersion().value()->id == 1);
  Reply metrics = c.Get("/metrics");
  CHECK(metrics.body.find("distilld_rollbacks_total 1") != std::string::npos);
  CHECK(metrics.body.find("distilld_learner_rounds_total{outcome=\"promoted\"} 1") != std::string::npos);

  stop = true;
  load.join();
  CHECK(answered > 0);
  CHECK(failed == 0);
}

TEST_CASE("under inference load the learner waits up to max_yield_s per round, then trains and promotes") {
  // A busy threshold of 1 request/s: the load thread is always above it.
  Env env([](config::Config& c) {
    c.learner.yield_above_rps = 1;
    c.learner.max_yield_s = 2;
  });
  TcpClient c = env.Client();
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::thread load([&] {
    TcpClient lc(Loopback(env.daemon->tcp_port()));
    std::vector<float> x(kTaskPixels, 0.5f);
    while (!stop) {
      if (lc.Post("/v2/models/fashion/infer", Infer4x4(x.data(), "load")).status != 200) ++failed;
    }
  });
  // The learner judges the rate over windows of >= 100 ms: let one pass.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::mt19937_64 rng(5);
  std::vector<float> x;
  std::vector<int64_t> y;
  env.task.Make(200, -1, rng, &x, &y);
  Reply posted = c.Post("/v1/samples", SamplesJson(x, y));
  Reply start = c.Post("/v1/learner/rounds", "{}");
  rapidjson::Document rd;
  if (posted.status == 200 && start.status == 202) rd = WaitRound(c, Parse(start.body)["round_id"].GetInt64());
  stop = true;
  load.join();
  REQUIRE(posted.status == 200);
  REQUIRE(start.status == 202);
  INFO(rd["reason"].GetString());
  CHECK(std::string(rd["outcome"].GetString()) == "promoted");
  // It waited its whole allowance (2 s) before and between steps.
  CHECK(rd["ended_us"].GetInt64() - rd["started_us"].GetInt64() >= 2'000'000);
  CHECK(failed == 0);
}

TEST_CASE("model.precision int8 serves a quantized student and reports it") {
  Env env([](config::Config& c) { c.model.precision = config::Precision::kInt8; });
  TcpClient c = env.Client();
  Reply meta = c.Get("/v2/models/fashion");
  REQUIRE(meta.status == 200);
  CHECK(std::string(Parse(meta.body)["parameters"]["precision"].GetString()) == "int8");
  // The int8 student still knows the classes the float one learned.
  CHECK(ClassAccuracy(c, env.task, 0).first > 0.8);
  CHECK(ClassAccuracy(c, env.task, 1).first > 0.8);
}

}  // namespace
}  // namespace distilld::testing
