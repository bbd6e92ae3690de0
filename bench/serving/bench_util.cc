// See bench_util.h.
#include "bench/serving/bench_util.h"

#include <torch/torch.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "common/clock.h"

namespace distilld::bench {

namespace {

long Field(const std::string& line, const std::string& key) {
  size_t p = line.find(key + "=");
  if (p == std::string::npos) return -1;
  return std::stol(line.substr(p + key.size() + 1));
}

}  // namespace

WrkResult RunWrk(const std::string& env, const std::string& script, int connections, int seconds, uint16_t port) {
  std::ostringstream cmd;
  // wrk's own measurement window lies inside [start_us, end_us].
  cmd << env << " wrk -t1 -c" << connections << " -d" << seconds << "s --timeout 5s -s " << script
      << " http://127.0.0.1:" << port << "/v2/models/fashion/infer 2>&1";
  WrkResult r;
  r.start_us = Clock::Real()->NowMicros();
  FILE* p = ::popen(cmd.str().c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.raw.append(buf, n);
  ::pclose(p);
  r.end_us = Clock::Real()->NowMicros();
  size_t at = r.raw.find("RESULT ");
  if (at == std::string::npos) return r;
  std::string line = r.raw.substr(at, r.raw.find('\n', at) - at);
  r.requests = Field(line, "requests");
  long duration_us = Field(line, "duration_us");
  r.p50_ms = Field(line, "p50_us") / 1000.0;
  r.p99_ms = Field(line, "p99_us") / 1000.0;
  r.errors = Field(line, "errors");
  r.non2xx = Field(line, "non2xx");
  r.rps = duration_us > 0 ? r.requests * 1e6 / duration_us : 0;
  r.ok = true;
  return r;
}

// Samples per second of the served module's forward pass, called directly.
double ForwardRate(const daemon::ServedModel& model, int64_t batch, double seconds, double* per_call_us) {
  at::Tensor x = torch::rand({batch, 1, 28, 28});
  for (int i = 0; i < 50; ++i) (void)model.Forward(x);
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  int64_t calls = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < 20; ++i) (void)model.Forward(x);
    calls += 20;
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *per_call_us = elapsed / calls * 1e6;
  return calls * batch / elapsed;
}

// The 1-minute load average: the machine is shared, so the report says how busy it was.
std::string LoadAverage() {
  std::ifstream f("/proc/loadavg");
  std::string one;
  f >> one;
  return one.empty() ? "?" : one;
}

std::string Fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

void AppendFloat(std::string* out, float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, r.ptr);
}

void DistillerProgressSummary(const learner::DistillerProgress& p, std::string* out) {
  *out = std::string(learner::LearnerStateName(p.state));
  if (p.state == learner::LearnerState::kTraining) {
    *out += " (step " + std::to_string(p.step) + " of " + std::to_string(p.total_steps) + ")";
  }
  *out += "; the round had waited " + Fixed(static_cast<double>(p.yielded_ms) / 1000.0, 1) + " s for inference";
}

}  // namespace distilld::bench
