// bench_crash_loop: the long crash loop with the learner on
// (tests/integration/crash_loop.h): SIGKILL at random moments while ingest,
// inference and learner rounds run, restart, check, repeat.
//
//   bench_crash_loop --distilld build/daemon/distilld --cycles 1000 --dir /tmp/crash-loop
//
// Prints one line per cycle and the figures at the end; exits 1 if any check failed.
#include <cstdlib>
#include <iostream>
#include <string>

#include "tests/integration/crash_loop.h"

int main(int argc, char** argv) {
  distilld::testing::CrashLoopOptions o;
  o.cycles = 1000;
  o.work_dir = "/tmp/distilld-crash-loop";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--cycles") {
      o.cycles = std::stoi(value);
    } else if (flag == "--dir") {
      o.work_dir = value;
    } else if (flag == "--distilld") {
      o.distilld = value;
    } else if (flag == "--seed") {
      o.seed = std::stoull(value);
    } else if (flag == "--max-kill-ms") {
      o.max_kill_ms = std::stoll(value);
    } else if (flag == "--startup-kill-fraction") {
      o.startup_kill_fraction = std::stod(value);
    } else {
      std::cerr << "unknown flag " << flag
                << " (--cycles N --dir D --distilld PATH --seed S --max-kill-ms MS --startup-kill-fraction F)\n";
      return 2;
    }
  }
  if (o.distilld.empty()) {
    std::cerr << "--distilld PATH is required\n";
    return 2;
  }
  o.progress = [](const std::string& line) { std::cout << line << std::endl; };
  auto report = distilld::testing::RunCrashLoop(o);
  if (!report.ok()) {
    std::cerr << report.status().ToString() << "\n";
    return 1;
  }
  std::cout << "\n" << report->Summary();
  return report->clean() ? 0 : 1;
}
