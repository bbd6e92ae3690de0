#include "common/heartbeat.h"

#include "common/log.h"

namespace distilld {

Heartbeat::Heartbeat(Clock* clock)
    : clock_(clock != nullptr ? clock : Clock::Real()), last_us_(clock_->MonotonicMicros()) {}

void Heartbeat::Beat() { last_us_.store(clock_->MonotonicMicros(), std::memory_order_relaxed); }

int64_t Heartbeat::last_beat_us() const { return last_us_.load(std::memory_order_relaxed); }

int64_t Heartbeat::AgeMicros() const { return clock_->MonotonicMicros() - last_beat_us(); }

bool HeartbeatCheck::Alive(std::string* stale) const {
  for (const Entry& e : entries_) {
    int64_t age = e.heartbeat->AgeMicros();
    if (age > e.max_age.count()) {
      if (!was_failing_.exchange(true)) {
        LOG(kWarning) << "liveness: " << e.name << " made no progress for " << age / 1000
                      << " ms (limit " << e.max_age.count() / 1000
                      << " ms); withholding watchdog pings";
      }
      if (stale != nullptr) *stale = e.name;
      return false;
    }
  }
  if (was_failing_.exchange(false)) {
    LOG(kInfo) << "liveness: all threads progressing again";
  }
  return true;
}

std::function<bool()> HeartbeatCheck::AsFunction() const {
  return [this] { return Alive(); };
}

}  // namespace distilld
