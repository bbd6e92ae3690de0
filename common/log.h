// Logging: one line per event on stderr, with a level on each line.
//
// Under journald (JOURNAL_STREAM set) each line starts with a syslog priority
// prefix such as "<6>" that journald turns into the entry's priority; on a
// terminal it starts with an ISO-8601 UTC time and the level name.
// Thread-safe: a line is written with a single write(2).
//
//   LOG(kInfo) << "listening on " << addr;
#pragma once

#include <sstream>
#include <string_view>

namespace distilld::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning"/"warn", "error". Returns false if unknown.
bool ParseLevel(std::string_view name, Level* out);
std::string_view LevelName(Level level);

void SetLevel(Level level);
Level GetLevel();
inline bool Enabled(Level level) { return static_cast<int>(level) >= static_cast<int>(GetLevel()); }

// Collects one line and writes it when destroyed.
class Line {
 public:
  explicit Line(Level level) : level_(level) {}
  ~Line();
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;
  template <typename T>
  Line& operator<<(const T& v) {
    os_ << v;
    return *this;
  }

 private:
  Level level_;
  std::ostringstream os_;
};

}  // namespace distilld::log

// LibTorch's c10 headers bring glog's LOG macro. Ours replaces it: include
// this header after any LibTorch header in a file (it is the last project
// include in files that use both).
#ifdef LOG
#undef LOG
#endif
#define LOG(level)                                                           \
  if (!::distilld::log::Enabled(::distilld::log::Level::level)) {            \
  } else                                                                     \
    ::distilld::log::Line(::distilld::log::Level::level)
