// What a test client of the rounds API needs without a Daemon in process:
// parse a JSON answer, and poll GET /v1/learner/rounds/{id} to its end.
// Shared by the in-process learning tests and the crash tests, which talk
// to a child `distilld serve`.
#pragma once

#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "tests/integration/http_test_client.h"
#include "tests/learner/torch_doctest.h"

namespace distilld::testing {

inline rapidjson::Document Parse(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.c_str());
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

// Polls a round every 50 ms until it is neither queued nor running; fails
// the test after `polls` polls.
inline rapidjson::Document WaitRound(TcpClient& c, int64_t id, int polls = 600) {
  for (int i = 0; i < polls; ++i) {
    Reply r = c.Get("/v1/learner/rounds/" + std::to_string(id));
    REQUIRE(r.status == 200);
    rapidjson::Document d = Parse(r.body);
    const std::string outcome = d["outcome"].GetString();
    if (outcome != "running" && outcome != "queued") return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("round " << id << " did not end");
  return {};
}

}  // namespace distilld::testing
