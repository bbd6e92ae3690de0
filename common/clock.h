// Injected time. Components take a Clock* (not owned) so tests can control
// time; production code passes Clock::Real().
#pragma once

#include <atomic>
#include <cstdint>

namespace distilld {

// Thread-safe: implementations must allow concurrent calls.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, microseconds since the Unix epoch (for records and logs).
  virtual int64_t NowMicros() const = 0;
  // Monotonic time in microseconds, for durations and deadlines.
  virtual int64_t MonotonicMicros() const = 0;
  // The process-wide real clock; never null, never freed.
  static Clock* Real();
};

// A clock that moves only when told to. Thread-safe.
class ManualClock : public Clock {
 public:
  explicit ManualClock(int64_t start_us = 1'700'000'000'000'000) : now_(start_us) {}
  int64_t NowMicros() const override { return now_.load(); }
  int64_t MonotonicMicros() const override { return now_.load(); }
  void Advance(int64_t us) { now_.fetch_add(us); }
  void Set(int64_t us) { now_.store(us); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace distilld
