#include "daemon/demo/traffic.h"

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "daemon/demo/http_client.h"
#include "daemon/demo/kserve_client.h"

namespace distilld::daemon {
namespace {
constexpr int64_t kWindowUs = 5'000'000;
}

InferenceTraffic::InferenceTraffic(std::string host, uint16_t port, std::string model, std::string input_name,
                                   const torch::Tensor& images, const torch::Tensor& labels, double rate_per_s,
                                   int64_t classes)
    : host_(std::move(host)),
      port_(port),
      target_("/v2/models/" + model + "/infer"),
      input_name_(std::move(input_name)),
      images_(images.contiguous()),
      labels_(labels.contiguous()),
      rate_(rate_per_s),
      classes_(classes) {}

InferenceTraffic::~InferenceTraffic() { Stop(); }

void InferenceTraffic::Start() { thread_ = std::thread([this] { Loop(); }); }

void InferenceTraffic::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void InferenceTraffic::Loop() {
  auto client = HttpClient::Create(host_, port_, 10000);
  const int64_t n = images_.size(0);
  std::vector<int64_t> sample_shape(images_.sizes().begin() + 1, images_.sizes().end());
  const int64_t per = images_[0].numel();
  const float* base = images_.data_ptr<float>();
  const int64_t* labels = labels_.data_ptr<int64_t>();
  const auto period = std::chrono::duration<double>(1.0 / rate_);
  auto next = std::chrono::steady_clock::now();
  Clock* clock = Clock::Real();
  for (int64_t i = 0; !stop_; i = (i + 1) % n) {
    next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(period);
    std::this_thread::sleep_until(next);
    EncodedRequest req = EncodeInferRequest(input_name_, base + i * per, 1, sample_shape, "demo-" + std::to_string(i));
    const int64_t t0 = clock->MonotonicMicros();
    Result<HttpClientResponse> res = client->Post(target_, std::move(req.body), req.headers);
    const int64_t t1 = clock->MonotonicMicros();
    std::string error;
    Result<InferAnswer> answer = Status::Internal("no answer");
    if (!res.ok()) {
      error = res.status().ToString();
    } else if (res->status != 200) {
      error = "HTTP " + std::to_string(res->status) + ": " + res->body.substr(0, 200);
    } else {
      answer = ParseInferAnswer(res->body);
      if (!answer.ok()) {
        error = answer.status().ToString();
      } else if (answer->labels.size() != 1 || answer->labels[0] < 0 || answer->labels[0] >= classes_ ||
                 answer->model_version.empty()) {
        error = "malformed answer: " + res->body.substr(0, 200);
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    totals_.requests++;
    if (!error.empty()) {
      totals_.failed++;
      totals_.last_error = error;
      continue;
    }
    totals_.last_version = answer->model_version;
    auto& [correct, answered] = totals_.by_version[answer->model_version];
    answered++;
    if (answer->labels[0] == labels[i]) correct++;
    window_.emplace_back(t1, static_cast<double>(t1 - t0) / 1000.0);
    while (!window_.empty() && window_.front().first < t1 - kWindowUs) window_.erase(window_.begin());
  }
}

TrafficSnapshot InferenceTraffic::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  TrafficSnapshot s = totals_;
  const int64_t now = Clock::Real()->MonotonicMicros();
  std::vector<double> lat;
  for (const auto& [t, ms] : window_) {
    if (t >= now - kWindowUs) lat.push_back(ms);
  }
  if (!lat.empty()) {
    std::sort(lat.begin(), lat.end());
    s.p50_ms = lat[lat.size() / 2];
    s.p99_ms = lat[std::min(lat.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(lat.size())))];
    s.requests_per_s = static_cast<double>(lat.size()) / (kWindowUs / 1e6);
  }
  return s;
}

}  // namespace distilld::daemon
