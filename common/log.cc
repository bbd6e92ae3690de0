#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>

namespace distilld::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};

bool UnderJournald() {
  static const bool journald = std::getenv("JOURNAL_STREAM") != nullptr;
  return journald;
}

int SyslogPriority(Level level) {
  switch (level) {
    case Level::kDebug: return 7;
    case Level::kInfo: return 6;
    case Level::kWarning: return 4;
    case Level::kError: return 3;
  }
  return 6;
}

}  // namespace

bool ParseLevel(std::string_view name, Level* out) {
  if (name == "debug") *out = Level::kDebug;
  else if (name == "info") *out = Level::kInfo;
  else if (name == "warning" || name == "warn") *out = Level::kWarning;
  else if (name == "error") *out = Level::kError;
  else return false;
  return true;
}

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarning: return "warning";
    case Level::kError: return "error";
  }
  return "info";
}

void SetLevel(Level level) { g_level.store(static_cast<int>(level)); }
Level GetLevel() { return static_cast<Level>(g_level.load()); }

Line::~Line() {
  std::string line;
  if (UnderJournald()) {
    line = "<" + std::to_string(SyslogPriority(level_)) + ">";
  } else {
    auto now = std::chrono::system_clock::now();
    std::time_t t = std::chrono::system_clock::to_time_t(now);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char msbuf[8];
    std::snprintf(msbuf, sizeof msbuf, ".%03dZ ", static_cast<int>(ms));
    line = buf;
    line += msbuf;
  }
  line += LevelName(level_);
  line += ' ';
  std::string msg = os_.str();
  // One event per line: fold embedded newlines so journald keeps one entry.
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  line += msg;
  line += '\n';
  ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
  (void)unused;
}

}  // namespace distilld::log
