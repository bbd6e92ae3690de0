#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "daemon/http/metrics.h"
#include "tests/support/temp_dir.h"

using namespace distilld::daemon;

namespace {
// Runs `promtool check metrics` on the text; returns its exit code, or -1
// when promtool is not installed.
int Promtool(const std::string& text, std::string* output) {
  if (::access("/usr/bin/promtool", X_OK) != 0) return -1;
  distilld::testing::TempDir dir;
  std::ofstream(dir.str("m.txt")) << text;
  FILE* p = ::popen(("/usr/bin/promtool check metrics < " + dir.str("m.txt") + " 2>&1").c_str(), "r");
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  int st = ::pclose(p);
  return WEXITSTATUS(st);
}
}  // namespace

TEST_CASE("metrics: exposition text of counters, gauges, histograms and collectors") {
  MetricsRegistry reg;
  auto* requests = reg.RegisterCounter("distilld_test_requests_total", "Requests.", {"endpoint", "code"});
  requests->WithLabels({"infer", "200"})->Increment(3);
  requests->WithLabels({"infer", "400"})->Increment();
  reg.RegisterGauge("distilld_test_version", "Version.")->Get()->Set(4);
  auto* h = reg.RegisterHistogram("distilld_test_duration_seconds", "Latency.", {0.001, 0.01})->Get();
  h->Observe(0.0005);
  h->Observe(0.005);
  h->Observe(5);
  reg.AddCollector([](std::string* out) {
    out->append("# HELP distilld_test_extra Extra.\n# TYPE distilld_test_extra gauge\ndistilld_test_extra 7\n");
  });
  const std::string text = reg.Render();
  CHECK(text.find("# TYPE distilld_test_requests_total counter\n") != std::string::npos);
  CHECK(text.find("distilld_test_requests_total{endpoint=\"infer\",code=\"200\"} 3\n") != std::string::npos);
  CHECK(text.find("distilld_test_version 4\n") != std::string::npos);
  CHECK(text.find("distilld_test_duration_seconds_bucket{le=\"0.001\"} 1\n") != std::string::npos);
  CHECK(text.find("distilld_test_duration_seconds_bucket{le=\"0.01\"} 2\n") != std::string::npos);
  CHECK(text.find("distilld_test_duration_seconds_bucket{le=\"+Inf\"} 3\n") != std::string::npos);
  CHECK(text.find("distilld_test_duration_seconds_count 3\n") != std::string::npos);
  CHECK(text.find("distilld_test_duration_seconds_sum 5.0055\n") != std::string::npos);
  CHECK(text.find("distilld_test_extra 7\n") != std::string::npos);

  std::string out;
  int rc = Promtool(text, &out);
  INFO(out);
  CHECK(rc == 0);  // -1: promtool (Debian package prometheus) is missing
}
