// Runs a command through /bin/sh and captures its output and exit code.
// For process-level tests of the distilld binary. Not thread-safe.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace distilld::testing {

struct ProcessResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};

inline ProcessResult RunCommand(const std::string& command) {
  ProcessResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) result.output.append(buf.data(), n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The distilld binary under test ($DISTILLD_BINARY, set by ctest).
inline std::string DistilldBinary() {
  const char* bin = std::getenv("DISTILLD_BINARY");
  return bin ? bin : "distilld";
}

}  // namespace distilld::testing
