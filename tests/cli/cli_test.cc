// The distilld binary as a process: help, version, check-config.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace distilld::testing {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_CASE("--help lists the commands and exit codes") {
  ProcessResult r = RunCommand(DistilldBinary() + " --help");
  CHECK(r.exit_code == 0);
  CHECK(Contains(r.output, "serve"));
  CHECK(Contains(r.output, "check-config"));
  CHECK(Contains(r.output, "Exit codes"));
}

TEST_CASE("--version prints the version") {
  ProcessResult r = RunCommand(DistilldBinary() + " --version");
  CHECK(r.exit_code == 0);
  CHECK(Contains(r.output, "distilld 0."));
}

TEST_CASE("an unknown flag is a usage error") {
  ProcessResult r = RunCommand(DistilldBinary() + " --no-such-flag");
  CHECK(r.exit_code == 2);
}

TEST_CASE("check-config accepts the example config with a one-line summary") {
  ProcessResult r = RunCommand(DistilldBinary() + " check-config " + DISTILLD_SOURCE_DIR_DEFAULT +
                               "/config/distilld.example.yaml");
  CHECK(r.exit_code == 0);
  CHECK(Contains(r.output, ": OK (model fashion, mlp student, listen 127.0.0.1:8080"));
}

TEST_CASE("check-config --reload-classes lists when a SIGHUP applies each field") {
  ProcessResult r = RunCommand(DistilldBinary() + " check-config --reload-classes " + DISTILLD_SOURCE_DIR_DEFAULT +
                               "/config/distilld.example.yaml");
  CHECK(r.exit_code == 0);
  CHECK(Contains(r.output, "\nserver.max_body_bytes immediate\n"));
  CHECK(Contains(r.output, "\nlearner.epochs next_round\n"));
  CHECK(Contains(r.output, "\nreplay.capacity restart\n"));
  CHECK(Contains(r.output, "\nlogging.level immediate\n"));
}

TEST_CASE("check-config reports every error with its position and exits 2") {
  TempDir dir;
  const std::string path = dir.str("bad.yaml");
  std::ofstream(path) << "learner:\n  temperature: 0\n  epochz: 2\nserver:\n  io_threads: x\n";
  ProcessResult r = RunCommand(DistilldBinary() + " check-config " + path);
  CHECK(r.exit_code == 2);
  CHECK(Contains(r.output, "learner.temperature: expected a number > 0 at line 2, column 16"));
  CHECK(Contains(r.output, "learner.epochz: unknown key"));
  CHECK(Contains(r.output, "server.io_threads: expected an integer in [1, 64] at line 5"));
}

TEST_CASE("serve with a missing config file exits 2") {
  TempDir dir;
  ProcessResult r = RunCommand(DistilldBinary() + " serve --config " + dir.str("none.yaml"));
  CHECK(r.exit_code == 2);
  CHECK(Contains(r.output, "cannot read config file"));
}

}  // namespace
}  // namespace distilld::testing
