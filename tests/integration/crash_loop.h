// The crash loop with the learner on: the real `distilld serve` process is
// SIGKILLed at random moments while ingest, inference and learner rounds all
// run, then restarted on the same state dir, over and over. After every kill
// it checks, from the outside:
// - every acknowledged sample is still waiting, byte for byte, or was
//   consumed; none comes back once consumed; and samples waiting + offered
//   to the replay buffer + held out equals every sample ever stored (none
//   lost, none counted twice);
// - the active version's file matches its registry checksum, and so does
//   every version file the registry says is kept;
// - no round is left "running" or "queued";
// - no version is registered without its file (unless the retention policy
//   removed it, as its row says) and no version file exists without its
//   row, and no temp file of an interrupted save is left;
// - the restarted daemon is ready (GET /v2/health/ready 200) and serves the
//   active version.
// Shared by the 20-cycle ctest (crash_loop_test.cc) and the long run in
// bench/reliability/ (bench_crash_loop, 1,000 cycles for the record).
//
// Not thread-safe: one CrashLoop runs on one thread (its workers are its own).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace distilld::testing {

struct CrashLoopOptions {
  std::string work_dir;         // required: models, config, state dir and logs go here
  std::string distilld;         // the binary; required
  int cycles = 20;
  uint64_t seed = 1;
  // Each cycle kills the daemon at a uniformly random moment this long after
  // it is ready and the workers have started.
  int64_t min_kill_ms = 100;
  int64_t max_kill_ms = 2500;
  // Share of cycles whose kill comes during start-up instead (0..300 ms
  // after the process starts: recovery, loading, opening the stores).
  double startup_kill_fraction = 0.05;
  // Ready later than this counts in CrashLoopReport::slow_starts (the
  // bench's target); the loop only fails on a daemon that never gets ready
  // (60 s).
  int64_t ready_target_ms = 2000;
  int samples_per_batch = 16;
  // Pause between ingest batches. Ingest faster than the learner trains
  // makes every round longer than the kill delay, and then no kill lands
  // after a version is decided.
  int64_t ingest_interval_ms = 40;
  // Samples ingested per cycle at most: rounds interrupted by kills leave
  // their samples waiting, and an unbounded backlog would make every later
  // round too long to finish between kills.
  int64_t max_samples_per_cycle = 640;
  // Progress lines (one per cycle) go here when set.
  std::function<void(const std::string&)> progress;
};

struct CrashLoopReport {
  int cycles = 0;
  int64_t samples_acked = 0;       // acknowledged by a 200 from POST /v1/samples
  int64_t samples_lost = 0;        // acknowledged, then neither waiting nor consumed
  int64_t samples_altered = 0;     // waiting with other bytes or another label
  int64_t samples_resurrected = 0; // seen consumed, later waiting again
  int64_t accounting_errors = 0;   // cycles where waiting + offered + held out != stored
  int64_t samples_stored = 0;      // ever stored (acknowledged or not), at the end
  int64_t samples_consumed = 0;    // offered to the buffer or held out, at the end
  int64_t versions_created = 0;    // highest version id at the end
  int64_t versions_corrupt = 0;    // a kept file whose checksum differs (active or not)
  int64_t versions_missing_file = 0;
  int64_t files_without_version = 0;  // incl. temp files left behind
  int64_t rounds_left_open = 0;
  int64_t rounds_promoted = 0, rounds_rejected = 0, rounds_aborted = 0, rounds_failed = 0;
  int64_t serve_errors = 0;        // the restarted daemon not ready, or not serving the active version
  int64_t infer_ok = 0;            // inference answers with 200 while the workers ran
  int64_t startup_kills = 0;
  int64_t max_ready_ms = 0;
  double mean_ready_ms = 0;
  int64_t slow_starts = 0;         // ready later than ready_target_ms
  std::vector<std::string> failures;  // one line per violated check (first 50)

  bool clean() const {
    return samples_lost + samples_altered + samples_resurrected + accounting_errors + versions_corrupt +
               versions_missing_file + files_without_version + rounds_left_open + serve_errors ==
           0;
  }
  std::string Summary() const;  // the figures, one "name: value" per line
};

// Runs the loop. An error Status only for a set-up failure (no binary, no
// work dir); violated checks are in the report.
Result<CrashLoopReport> RunCrashLoop(const CrashLoopOptions& options);

}  // namespace distilld::testing
