// The crash loop with the learner on (crash_loop.h), 20 cycles: the short
// version of bench/reliability's 1,000-cycle run, in every ctest run.
#include "tests/integration/crash_loop.h"

#include <doctest/doctest.h>

#include <iostream>

#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace distilld::testing {
namespace {

TEST_CASE("20 SIGKILLs while ingest, inference and rounds run: nothing lost or doubled, a verified state each time") {
  TempDir dir;
  CrashLoopOptions o;
  o.work_dir = dir.str("loop");
  o.distilld = DistilldBinary();
  o.cycles = 20;
  o.seed = 7;
  o.max_kill_ms = 1500;
  o.startup_kill_fraction = 0.1;
  o.progress = [](const std::string& line) { std::cout << line << "\n"; };
  Result<CrashLoopReport> r = RunCrashLoop(o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  INFO(r->Summary());
  CHECK(r->cycles == 20);
  CHECK(r->clean());
  // The loop did what it claims: samples stored and consumed, rounds
  // decided, versions made, requests answered between the kills.
  CHECK(r->samples_acked > 0);
  CHECK(r->samples_consumed > 0);
  CHECK(r->rounds_promoted + r->rounds_rejected > 0);
  CHECK(r->versions_created > 1);
  CHECK(r->infer_ok > 0);
}

}  // namespace
}  // namespace distilld::testing
