// InferenceTraffic: the demo's second client. It sends single-sample binary
// infer requests for test images at a steady rate over one keep-alive
// connection, checks every answer (HTTP 200, a label in range, a version),
// and keeps counts and a latency window for the progress display.
//
// Thread-safety: Start/Stop from one thread; Snapshot() from any thread.
// Owns its thread and client; borrows the image tensor (must outlive it).
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace distilld::daemon {

struct TrafficSnapshot {
  uint64_t requests = 0;
  uint64_t failed = 0;          // transport errors, non-200, or malformed answers
  double requests_per_s = 0;    // over the last window
  double p50_ms = 0, p99_ms = 0;  // over the last window
  std::string last_version;
  std::string last_error;
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_version;  // version -> (correct, answered)
};

class InferenceTraffic {
 public:
  InferenceTraffic(std::string host, uint16_t port, std::string model, std::string input_name,
                   const torch::Tensor& images, const torch::Tensor& labels, double rate_per_s, int64_t classes);
  ~InferenceTraffic();
  void Start();
  void Stop();
  TrafficSnapshot Snapshot();

 private:
  void Loop();
  std::string host_;
  uint16_t port_;
  std::string target_;
  std::string input_name_;
  torch::Tensor images_;  // contiguous float [N, ...]
  torch::Tensor labels_;
  double rate_;
  int64_t classes_;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  std::mutex mu_;
  TrafficSnapshot totals_;                      // guarded by mu_
  std::vector<std::pair<int64_t, double>> window_;  // (time_us, latency_ms), guarded by mu_
};

}  // namespace distilld::daemon
