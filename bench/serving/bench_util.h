// Helpers of serving_bench: running wrk and reading its RESULT line, the
// in-process forward baseline, and report formatting. Free functions; wrk
// runs as a child process (popen), one at a time per caller.
#pragma once

#include <cstdint>
#include <string>

#include "daemon/serving/model_manager.h"
#include "learner/distiller.h"

namespace distilld::bench {

struct WrkResult {
  bool ok = false;
  double rps = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  long requests = 0;
  long errors = 0;
  long non2xx = 0;
  int64_t start_us = 0;  // wall clock around the wrk process
  int64_t end_us = 0;
  std::string raw;
};

// Runs `env wrk -s script` with one thread and `connections` connections for
// `seconds` against /v2/models/fashion/infer on 127.0.0.1:port; ok is false
// when wrk printed no RESULT line (the raw output says why).
WrkResult RunWrk(const std::string& env, const std::string& script, int connections, int seconds, uint16_t port);

// Samples per second of the served module's forward pass, called directly;
// *per_call_us gets the time of one call.
double ForwardRate(const daemon::ServedModel& model, int64_t batch, double seconds, double* per_call_us);

// The 1-minute load average: the machine is shared, so the report says how busy it was.
std::string LoadAverage();

std::string Fixed(double v, int digits = 1);

// Appends the shortest decimal form of v (for JSON request bodies).
void AppendFloat(std::string* out, float v);

// The learner's state and its yield time, for the report.
void DistillerProgressSummary(const learner::DistillerProgress& p, std::string* out);

}  // namespace distilld::bench
