#include "common/crash_point.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace distilld {

void CrashPoint(std::string_view point) {
  static const std::string armed = [] {
    const char* v = std::getenv("DISTILLD_CRASH_AT");
    return std::string(v == nullptr ? "" : v);
  }();
  if (armed.empty() || armed != point) return;
  std::fprintf(stderr,
               "distilld: crash point %s reached (DISTILLD_CRASH_AT), killing the process\n",
               armed.c_str());
  std::fflush(stderr);
  std::raise(SIGKILL);
}

}  // namespace distilld
