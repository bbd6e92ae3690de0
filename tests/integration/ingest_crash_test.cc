// Ingest durability through the API: samples acknowledged by the real
// `distilld serve` process are all present, byte for byte, after SIGKILL.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "storage/sample_store.h"
#include "tests/integration/child_daemon.h"
#include "tests/integration/http_test_client.h"
#include "tests/support/temp_dir.h"

namespace distilld::testing {
namespace {

TEST_CASE("acknowledged samples survive SIGKILL of the daemon") {
  TempDir dir;
  WriteTinyServeConfig(dir.str("d.yaml"), dir.str("state"));
  ChildProcess child;
  REQUIRE(StartServe(child, dir.str("d.yaml"), dir.str("log")));
  const uint16_t port = WaitForPort(dir.str("log"));
  REQUIRE(port != 0);

  TcpClient c(Loopback(port));
  REQUIRE(c.connected());
  struct Acked {
    uint64_t first;
    std::vector<float> values;
    std::vector<int64_t> labels;
  };
  std::vector<Acked> acked;
  for (int b = 0; b < 30; ++b) {
    Acked a;
    std::string data, labels;
    for (int i = 0; i < 8; ++i) {
      for (int p = 0; p < 4; ++p) {
        // Integers print exactly with std::to_string, so the comparison is bit-exact.
        float v = static_cast<float>(b * 1000 + i * 10 + p);
        a.values.push_back(v);
        data += (data.empty() ? "" : ",") + std::to_string(v);
      }
      a.labels.push_back((b + i) % 4 - 1);
      labels += (labels.empty() ? "" : ",") + std::to_string(a.labels.back());
    }
    Reply r = c.Post("/v1/samples", R"({"inputs":[{"name":"input","datatype":"FP32","shape":[8,1,2,2],"data":[)" +
                                        data + R"(]},{"name":"label","datatype":"INT64","shape":[8],"data":[)" +
                                        labels + "]}]}");
    REQUIRE(r.status == 200);
    a.first = std::stoull(r.body.substr(r.body.find("\"first_id\":") + 11));
    acked.push_back(std::move(a));
  }
  REQUIRE(child.Signal(SIGKILL));
  REQUIRE(child.Wait(std::chrono::seconds(10)).has_value());

  storage::SampleStoreOptions so;
  so.path = dir.str("state/samples");
  auto store = storage::SampleStore::Open(so);
  REQUIRE(store.ok());
  CHECK((*store)->CountIncoming(0).value() == 30 * 8);
  for (const Acked& a : acked) {
    for (int i = 0; i < 8; ++i) {
      auto s = (*store)->GetIncoming(a.first + i);
      REQUIRE(s.ok());
      REQUIRE(s->data.size() == 16);
      std::vector<float> got(4);
      std::memcpy(got.data(), s->data.data(), 16);
      CHECK(got == std::vector<float>(a.values.begin() + i * 4, a.values.begin() + i * 4 + 4));
      if (a.labels[i] < 0) {
        CHECK_FALSE(s->label.has_value());
      } else {
        CHECK(s->label == std::optional<int64_t>(a.labels[i]));
      }
    }
  }
}

}  // namespace
}  // namespace distilld::testing
