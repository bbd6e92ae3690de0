// Every endpoint with good and bad input, over real sockets.
// First: orders LibTorch (glog CHECK) before doctest.
#include "tests/learner/torch_doctest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/integration/rounds_client.h"
#include "tests/integration/serving_fixture.h"

using namespace distilld;
using namespace distilld::testing;
using boost::beast::http::verb;

TEST_CASE("serving: health, metadata, infer (JSON, binary, Unix socket) and metrics") {
  TempDir dir;
  auto d = StartDaemon(TestConfig(dir));
  TcpClient c(Loopback(d->tcp_port()));
  REQUIRE(c.connected());

  CHECK(c.Get("/v2/health/live").status == 200);
  auto ready = c.Get("/v2/health/ready");
  CHECK(ready.status == 200);
  CHECK(ready.keep_alive);
  auto meta = c.Get("/v2");
  CHECK(meta.status == 200);
  CHECK(meta.body.find(R"("extensions":["binary_tensor_data","statistics"])") != std::string::npos);
  CHECK(meta.body.find(R"("name":"distilld")") != std::string::npos);

  auto model = c.Get("/v2/models/fashion");
  CHECK(model.status == 200);
  CHECK(model.body.find(R"("versions":["1"])") != std::string::npos);
  CHECK(model.body.find(R"("inputs":[{"name":"input","datatype":"FP32","shape":[-1,1,28,28]}])") !=
        std::string::npos);
  CHECK(model.body.find(R"({"name":"label","datatype":"INT64","shape":[-1]})") != std::string::npos);
  CHECK(c.Get("/v2/models/fashion/versions/1").status == 200);
  CHECK(c.Get("/v2/models/fashion/versions/2").status == 404);
  CHECK(c.Get("/v2/models/fashion/versions/abc").status == 404);
  CHECK(c.Get("/v2/models/other").status == 404);
  CHECK(c.Get("/v2/models/fashion/ready").status == 200);
  CHECK(c.Get("/v2/models/fashion/versions/1/ready").status == 200);
  CHECK(c.Get("/v2/models/other/ready").status == 404);
  CHECK(c.Get("/nothing/here").status == 404);
  auto wrong_method = c.Get("/v2/models/fashion/infer");
  CHECK(wrong_method.status == 405);

  auto infer = c.Post("/v2/models/fashion/infer", InferJson(2));
  CHECK(infer.status == 200);
  CHECK(infer.body.find(R"("model_name":"fashion","model_version":"1","id":"req-1")") != std::string::npos);
  CHECK(infer.body.find(R"("name":"logits","datatype":"FP32","shape":[2,10])") != std::string::npos);
  CHECK(infer.body.find(R"("name":"probabilities","datatype":"FP32","shape":[2,10])") != std::string::npos);
  CHECK(infer.body.find(R"("name":"label","datatype":"INT64","shape":[2])") != std::string::npos);

  for (const char* dtype : {"FP64", "FP16"}) {
    auto r = c.Post("/v2/models/fashion/infer", InferJson(1, "0.5", dtype));
    CHECK_MESSAGE(r.status == 200, dtype);
  }
  CHECK(c.Post("/v2/models/fashion/infer", InferJson(1, "3", "UINT8")).status == 200);
  CHECK(c.Post("/v2/models/fashion/infer", InferJson(1, "-3", "INT8")).status == 200);
  CHECK(c.Post("/v2/models/fashion/versions/1/infer", InferJson(1)).status == 200);
  CHECK(c.Post("/v2/models/fashion/versions/7/infer", InferJson(1)).status == 404);
  CHECK(c.Post("/v2/models/other/infer", InferJson(1)).status == 404);

  size_t hl = 0;
  std::string bin = InferBinary(3, &hl);
  auto b = c.Request(verb::post, "/v2/models/fashion/infer", bin, "application/octet-stream", hl);
  REQUIRE(b.status == 200);
  REQUIRE_FALSE(b.header_length.empty());
  size_t rhl = std::stoul(b.header_length);
  std::string json = b.body.substr(0, rhl);
  CHECK(json.find(R"({"name":"label","datatype":"INT64","shape":[3],"parameters":{"binary_data_size":24}})") !=
        std::string::npos);
  CHECK(json.find(R"("name":"probabilities","datatype":"FP32","shape":[3,10],"data":[)") != std::string::npos);
  REQUIRE(b.body.size() == rhl + 24);
  int64_t labels[3];
  std::memcpy(labels, b.body.data() + rhl, 24);
  CHECK(labels[0] >= 0);
  CHECK(labels[0] < 10);
  CHECK(labels[0] == labels[1]);  // identical samples, identical labels

  // The same over the Unix socket, whose mode is 0660 by default.
  struct stat st {};
  REQUIRE(::stat(dir.str("distilld.sock").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0660);
  UnixClient u(boost::asio::local::stream_protocol::endpoint(dir.str("distilld.sock")));
  REQUIRE(u.connected());
  auto ur = u.Post("/v2/models/fashion/infer", InferJson(1));
  CHECK(ur.status == 200);
  CHECK(ur.body.find(R"("model_version":"1")") != std::string::npos);

  auto m = c.Get("/metrics");
  REQUIRE(m.status == 200);
  CHECK(m.content_type.find("text/plain") == 0);
  CHECK(MetricValue(m.body, R"(distilld_http_requests_total{endpoint="infer",code="200"})") >= 8);
  CHECK(MetricValue(m.body, R"(distilld_http_requests_total{endpoint="infer",code="404"})") == 2);
  CHECK(MetricValue(m.body, "distilld_model_active_version") == 1);
  CHECK(MetricValue(m.body, "distilld_model_swaps_total") == 1);
  CHECK(m.body.find("distilld_batch_size_bucket") != std::string::npos);
  CHECK(m.body.find("distilld_batch_queue_duration_seconds_bucket") != std::string::npos);
  CHECK(m.body.find("distilld_http_request_duration_seconds_bucket{endpoint=\"infer\"") != std::string::npos);
  // /v1/stats reads the same record of infer requests as /metrics.
  const auto infer_total = static_cast<int64_t>(
      MetricValue(m.body, R"(distilld_http_request_duration_seconds_count{endpoint="infer"})"));
  CHECK(infer_total >= 10);
  auto stats = c.Get("/v1/stats");
  REQUIRE(stats.status == 200);
  CHECK(stats.body.find("\"requests_total\":" + std::to_string(infer_total) + ",\"errors\":0,") !=
        std::string::npos);
  // promtool (Debian package prometheus) lints the exposition.
  std::ofstream(dir.str("metrics.txt")) << m.body;
  REQUIRE(::access("/usr/bin/promtool", X_OK) == 0);
  FILE* p = ::popen(("/usr/bin/promtool check metrics < " + dir.str("metrics.txt") + " 2>&1").c_str(), "r");
  std::string out;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  INFO(out);
  CHECK(WEXITSTATUS(rc) == 0);
}

TEST_CASE("serving: the statistics extension counts what each version answered") {
  TempDir dir;
  auto d = StartDaemon(TestConfig(dir));
  TcpClient c(Loopback(d->tcp_port()));
  REQUIRE(c.connected());
  // The served version is listed before its first request, all zero.
  rapidjson::Document before = Parse(c.Get("/v2/models/fashion/stats").body);
  REQUIRE(before["model_stats"].Size() == 1);
  CHECK(std::string(before["model_stats"][0]["version"].GetString()) == "1");
  CHECK(before["model_stats"][0]["inference_count"].GetUint64() == 0);

  int64_t samples = 0;
  for (int batch : {2, 1, 3}) {
    REQUIRE(c.Post("/v2/models/fashion/infer", InferJson(batch)).status == 200);
    samples += batch;
  }
  size_t hl = 0;
  const std::string bin = InferBinary(4, &hl);
  REQUIRE(c.Request(verb::post, "/v2/models/fashion/versions/1/infer", bin, "application/octet-stream", hl).status ==
          200);
  samples += 4;
  CHECK(c.Post("/v2/models/fashion/infer", R"({"inputs":[]})").status == 400);  // a failure of version 1

  for (const char* path : {"/v2/models/fashion/stats", "/v2/models/stats", "/v2/models/fashion/versions/1/stats"}) {
    auto r = c.Get(path);
    REQUIRE_MESSAGE(r.status == 200, path);
    rapidjson::Document doc = Parse(r.body);
    REQUIRE(doc["model_stats"].Size() == 1);
    const auto& v = doc["model_stats"][0];
    CHECK(std::string(v["name"].GetString()) == "fashion");
    CHECK(v["inference_count"].GetUint64() == static_cast<uint64_t>(samples));
    CHECK(v["execution_count"].GetUint64() >= 1);
    CHECK(v["execution_count"].GetUint64() <= 4);
    CHECK(v["last_inference"].GetInt64() > 1'700'000'000'000);
    const auto& st = v["inference_stats"];
    CHECK(st["success"]["count"].GetUint64() == 4);
    CHECK(st["fail"]["count"].GetUint64() == 1);
    CHECK(st["compute_infer"]["count"].GetUint64() == 4);
    CHECK(st["compute_infer"]["ns"].GetUint64() > 0);
    CHECK(st["success"]["ns"].GetUint64() >= st["compute_infer"]["ns"].GetUint64() / 4);
    uint64_t batched = 0;
    for (const auto& b : v["batch_stats"].GetArray()) {
      batched += b["batch_size"].GetUint64() * b["compute_infer"]["count"].GetUint64();
    }
    CHECK(batched == static_cast<uint64_t>(samples));
  }
  auto unknown_version = c.Get("/v2/models/fashion/versions/2/stats");
  CHECK(unknown_version.status == 404);
  CHECK(unknown_version.body.find("version '2'") != std::string::npos);
  auto unknown_model = c.Get("/v2/models/other/stats");
  CHECK(unknown_model.status == 404);
  CHECK(unknown_model.body.find("unknown model 'other'") != std::string::npos);
}

TEST_CASE("serving: bad inputs get 400/404/413/431 naming the problem") {
  TempDir dir;
  auto d = StartDaemon(TestConfig(dir));
  TcpClient c(Loopback(d->tcp_port()));
  REQUIRE(c.connected());

  auto shape = c.Post("/v2/models/fashion/infer", InferJson(1, "0.5", "FP32", "28,28", 784));
  CHECK(shape.status == 400);
  CHECK(shape.body.find("inputs[0].shape") != std::string::npos);
  auto count = c.Post("/v2/models/fashion/infer", InferJson(1, "0.5", "FP32", "1,28,28", 783));
  CHECK(count.status == 400);
  CHECK(count.body.find("inputs[0].data: 783 elements, expected 784") != std::string::npos);
  // A batch size far beyond the data is refused before anything is sized by
  // it (the fuzzer found a JSON one that reserved 2.9 GB; this one would reserve 6 GB).
  const std::string huge =
      R"({"inputs":[{"name":"input","shape":[2000000,1,28,28],"datatype":"FP32","data":[0.5]}]})";
  for (const char* path : {"/v2/models/fashion/infer", "/v1/samples"}) {
    CAPTURE(path);
    auto big = c.Post(path, huge);
    INFO(big.body);
    CHECK(big.status == 400);
    CHECK(big.body.find("1 elements, expected 1568000000") != std::string::npos);
  }
  CHECK(c.Get("/v2/health/ready").status == 200);
  auto dtype = c.Post("/v2/models/fashion/infer", InferJson(1, "1", "BYTES"));
  CHECK(dtype.status == 400);
  CHECK(dtype.body.find("inputs[0].datatype") != std::string::npos);
  auto int64 = c.Post("/v2/models/fashion/infer", InferJson(1, "1", "INT64"));
  CHECK(int64.status == 400);
  auto nan = c.Post("/v2/models/fashion/infer", InferJson(1, "NaN"));
  CHECK(nan.status == 400);
  CHECK(nan.body.find("inputs[0].data[0]: value is not finite") != std::string::npos);
  auto range = c.Post("/v2/models/fashion/infer", InferJson(1, "300", "UINT8"));
  CHECK(range.status == 400);
  auto json = c.Post("/v2/models/fashion/infer", "{not json");
  CHECK(json.status == 400);
  CHECK(json.body.find("invalid JSON") != std::string::npos);
  auto unknown = c.Post("/v2/models/nope/infer", InferJson(1));
  CHECK(unknown.status == 404);
  CHECK(unknown.body.find("unknown model 'nope'") != std::string::npos);

  size_t hl = 0;
  std::string truncated = InferBinary(2, &hl, 4);
  auto t = c.Request(verb::post, "/v2/models/fashion/infer", truncated, "application/octet-stream", hl);
  CHECK(t.status == 400);
  CHECK(t.body.find("binary_data_size") != std::string::npos);
  std::string whole = InferBinary(1, &hl);
  auto beyond = c.Request(verb::post, "/v2/models/fashion/infer", whole, "application/octet-stream", whole.size() + 10);
  CHECK(beyond.status == 400);
  CHECK(beyond.body.find("Inference-Header-Content-Length") != std::string::npos);
  CHECK(c.Get("/v2/health/live").status == 200);  // 400s keep the connection

  // Over the body limit (256 KiB in TestConfig): 413, then the connection closes.
  auto big = c.Post("/v2/models/fashion/infer", InferJson(100));  // ~310 KiB
  CHECK(big.status == 413);
  CHECK_FALSE(big.keep_alive);
  CHECK(c.ClosedByPeer());

  TcpClient h(Loopback(d->tcp_port()));
  std::string long_header = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8000, 'a') + "\r\n\r\n";
  auto r431 = h.Raw(long_header);
  CHECK(r431.status == 431);

  TcpClient both(Loopback(d->tcp_port()));
  auto r400 = both.Raw(
      "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  CHECK(r400.status == 400);
  CHECK_FALSE(r400.keep_alive);
  CHECK(both.ClosedByPeer());

  TcpClient garbage(Loopback(d->tcp_port()));
  CHECK(garbage.Raw("HELLO THERE\r\n\r\n").status == 400);
  CHECK(garbage.ClosedByPeer());

  TcpClient chunk(Loopback(d->tcp_port()));
  auto bad_chunk = chunk.Raw(
      "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
  CHECK(bad_chunk.status == 400);

  TcpClient m(Loopback(d->tcp_port()));
  auto metrics = m.Get("/metrics");
  CHECK(MetricValue(metrics.body, R"(distilld_http_requests_total{endpoint="invalid",code="413"})") == 1);
  CHECK(MetricValue(metrics.body, R"(distilld_http_requests_total{endpoint="invalid",code="431"})") == 1);
}

TEST_CASE("serving: Expect: 100-continue gets an interim response before the body is sent") {
  TempDir dir;
  auto d = StartDaemon(TestConfig(dir));
  TcpClient c(Loopback(d->tcp_port()));
  const std::string body = InferJson(1);
  c.SendRaw("POST /v2/models/fashion/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Expect: 100-continue\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n");
  auto interim = c.ReadReply();
  CHECK(interim.status == 100);
  c.SendRaw(body);
  auto r = c.ReadReply();
  CHECK(r.status == 200);
  CHECK(r.body.find(R"("model_version":"1")") != std::string::npos);
}

TEST_CASE("serving: connection limit, read deadline and idle timeout") {
  TempDir dir;
  auto cfg = TestConfig(dir);
  cfg.server.max_connections = 2;
  cfg.server.read_timeout_ms = 300;
  cfg.server.idle_timeout_ms = 400;
  auto d = StartDaemon(cfg);

  TcpClient a(Loopback(d->tcp_port()));
  TcpClient b(Loopback(d->tcp_port()));
  REQUIRE(a.Get("/v2/health/live").status == 200);
  REQUIRE(b.Get("/v2/health/live").status == 200);
  // At the limit a new connection takes the slot of the one idle longest
  // (a; the 503 when every connection is answering is tested in
  // tests/daemon/http_server_test.cc).
  TcpClient extra(Loopback(d->tcp_port()));
  auto served = extra.Get("/v2/health/live");
  INFO(served.error);
  CHECK(served.status == 200);
  CHECK(a.ClosedByPeer());
  CHECK(b.Get("/v2/health/live").status == 200);  // the other is unaffected

  // Idle keep-alive connections are closed after idle_timeout_ms.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  CHECK(b.ClosedByPeer());
  CHECK(extra.ClosedByPeer());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  // A slow sender is cut off by the read deadline.
  TcpClient slow(Loopback(d->tcp_port()));
  slow.SendRaw("GET /v2/health/live HTTP/1.1\r\nHost:");
  auto start = std::chrono::steady_clock::now();
  CHECK(slow.ClosedByPeer());
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited < std::chrono::milliseconds(2000));
  CHECK(waited > std::chrono::milliseconds(200));
}
