// Heartbeat: a lock-free progress marker a thread beats, and HeartbeatCheck,
// the liveness test over several of them (the daemon's watchdog withholds
// systemd pings while any is stale).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace distilld {

// A progress marker: one thread calls Beat() whenever it makes progress or,
// when idle, from its periodic wake-up (an I/O loop posts a repeating timer,
// an inference thread uses a timed wait on its queue, the learner beats per
// training step and while waiting for a trigger). Thread-safe and lock-free.
class Heartbeat {
 public:
  // `clock` is not owned and must outlive the Heartbeat; nullptr = real clock.
  // A new Heartbeat counts as having beaten at construction.
  explicit Heartbeat(Clock* clock = nullptr);
  void Beat();
  // Monotonic microseconds of the last beat.
  int64_t last_beat_us() const;
  // Microseconds since the last beat.
  int64_t AgeMicros() const;

 private:
  Clock* clock_;
  std::atomic<int64_t> last_us_;
};

// A liveness check over named heartbeats: passes when every heartbeat beat
// within its own max_age. Logs a warning naming a stale heartbeat when the
// check first fails, and an info line when it recovers. Thread-safe.
class HeartbeatCheck {
 public:
  struct Entry {
    std::string name;                   // e.g. "io loop", "inference 0", "learner"
    const Heartbeat* heartbeat;         // not owned; must outlive the check
    std::chrono::microseconds max_age;  // longer than the thread's beat period
  };
  explicit HeartbeatCheck(std::vector<Entry> entries) : entries_(std::move(entries)) {}
  // True if all heartbeats are fresh. Sets *stale (if given) to the first
  // stale heartbeat's name.
  bool Alive(std::string* stale = nullptr) const;
  // Adapts this check (which must outlive the function) for WatchdogOptions.
  std::function<bool()> AsFunction() const;

 private:
  std::vector<Entry> entries_;
  mutable std::atomic<bool> was_failing_{false};
};

}  // namespace distilld
