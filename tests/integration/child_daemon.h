// The real `distilld serve` as a child process, for the crash tests: start
// it on a config file with an environment (e.g. DISTILLD_CRASH_AT), find
// the port it logs, and wait for it to die.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/subprocess.h"
#include "tests/systemd/systemd_test_util.h"

namespace distilld::testing {

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The port from "distilld listening on http://127.0.0.1:PORT" in the log,
// or 0 if it does not appear within 30 s.
inline uint16_t WaitForPort(const std::string& log_path) {
  for (int i = 0; i < 600; ++i) {
    const std::string text = ReadText(log_path);
    const std::string marker = "listening on http://127.0.0.1:";
    size_t p = text.find(marker);
    if (p != std::string::npos) {
      size_t end = text.find_first_not_of("0123456789", p + marker.size());
      if (end != std::string::npos)
        return static_cast<uint16_t>(std::stoi(text.substr(p + marker.size())));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

// Writes the smallest serving config to `path`: a built-in MLP (hidden [4]) on
// 1x2x2 inputs with 3 classes, the state dir given, the learner off, every
// server limit at its default. For tests of ingest and connections.
inline void WriteTinyServeConfig(const std::string& path, const std::string& state_dir) {
  std::ofstream(path) << "server:\n  listen: \"127.0.0.1:0\"\n"
                      << "model:\n  input_shape: [1, 2, 2]\n  classes: 3\n"
                      << "  architecture:\n    hidden: [4]\n"
                      << "storage:\n  state_dir: \"" << state_dir << "\"\n"
                      << "learner:\n  enabled: false\n";
}

// Starts `distilld serve --config config_path` (the binary under test, or
// `binary`), logging to log_path, with `env` set in the child only.
inline bool StartServe(ChildProcess& child, const std::string& config_path,
                       const std::string& log_path,
                       std::vector<std::pair<std::string, std::optional<std::string>>> env = {},
                       const std::string& binary = DistilldBinary()) {
  ChildProcess::Options o;
  o.argv = {binary, "serve", "--config", config_path};
  o.output_path = log_path;
  o.env = std::move(env);
  return child.Start(o);
}

}  // namespace distilld::testing
