// Shared set-up for the serving integration tests: a Daemon on port 0 with a
// temp state dir and a tiny MLP student, and request builders.
#pragma once

#include "tests/learner/torch_doctest.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "daemon/daemon.h"
#include "tests/integration/http_test_client.h"
#include "tests/support/temp_dir.h"

namespace distilld::testing {

inline config::Config TestConfig(const TempDir& dir) {
  config::Config c;
  c.server.listen = "127.0.0.1:0";
  c.server.unix_socket = dir.str("distilld.sock");
  c.server.io_threads = 2;
  c.server.max_body_bytes = 256 * 1024;
  c.server.max_header_bytes = 4096;
  c.server.drain_timeout_ms = 5000;
  c.model.architecture.kind = "mlp";
  c.model.architecture.hidden = {16};
  c.batching.max_batch_size = 16;
  c.batching.max_queue_delay_us = 200;
  c.batching.inference_threads = 1;
  c.storage.state_dir = dir.str("state");
  c.storage.sync = false;
  return c;
}

inline std::unique_ptr<daemon::Daemon> StartDaemon(const config::Config& c) {
  auto d = daemon::Daemon::Create(c);
  Status s = d->Start();
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(d->tcp_port() != 0);
  return d;
}

// A JSON infer body with `batch` samples of 1x28x28, every value `value`.
inline std::string InferJson(int batch, const std::string& value = "0.5", const std::string& datatype = "FP32",
                             const std::string& shape_tail = "1,28,28", int elements = -1,
                             const std::string& id = "req-1") {
  if (elements < 0) elements = batch * 784;
  std::string body = R"({"id":")" + id + R"(","inputs":[{"name":"input","shape":[)" + std::to_string(batch) + "," +
                     shape_tail + R"(],"datatype":")" + datatype + R"(","data":[)";
  for (int i = 0; i < elements; ++i) {
    if (i) body += ',';
    body += value;
  }
  body += "]}]}";
  return body;
}

// A binary-extension infer body; *header_length receives the JSON length.
inline std::string InferBinary(int batch, size_t* header_length, int drop_bytes = 0) {
  std::string header = R"({"inputs":[{"name":"input","shape":[)" + std::to_string(batch) +
                       R"(,1,28,28],"datatype":"FP32","parameters":{"binary_data_size":)" +
                       std::to_string(batch * 784 * 4) +
                       R"(}}],"outputs":[{"name":"label","parameters":{"binary_data":true}},{"name":"probabilities"}]})";
  *header_length = header.size();
  std::vector<float> data(static_cast<size_t>(batch) * 784, 0.25f);
  std::string body = header + std::string(reinterpret_cast<const char*>(data.data()), data.size() * 4);
  body.resize(body.size() - drop_bytes);
  return body;
}

// The value of one sample line of the Prometheus text, or -1.
inline double MetricValue(const std::string& text, const std::string& line_prefix) {
  size_t pos = text.find("\n" + line_prefix + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(text.substr(pos + line_prefix.size() + 2));
}

}  // namespace distilld::testing
