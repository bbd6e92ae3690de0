#include "daemon/sd_notify.h"

#include <systemd/sd-daemon.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/log.h"

namespace distilld::daemon {
namespace {

// sd_notify returns <0 (-errno) on failure, 0 when $NOTIFY_SOCKET is unset and
// >0 when the datagram was sent.
Status Send(const std::string& message) {
  int r = sd_notify(/*unset_environment=*/0, message.c_str());
  if (r < 0) {
    return Status::IoError("sd_notify(\"" + message + "\"): " + std::strerror(-r));
  }
  return Status::Ok();
}

class NotifierImpl final : public Notifier {
 public:
  explicit NotifierImpl(Clock* clock) : clock_(clock) {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    enabled_ = socket != nullptr && socket[0] != '\0';
  }

  bool enabled() const override { return enabled_; }
  Status Ready() override { return SendIfEnabled("READY=1"); }
  Status Reloading() override {
    // MONOTONIC_USEC lets systemd tell this reload from an earlier one
    // (required by Type=notify-reload, harmless for Type=notify).
    return SendIfEnabled("RELOADING=1\nMONOTONIC_USEC=" +
                         std::to_string(clock_->MonotonicMicros()));
  }
  Status Stopping() override { return SendIfEnabled("STOPPING=1"); }
  Status SetStatus(std::string_view text) override {
    std::string line(text);
    // A newline would start a new assignment in the datagram.
    for (char& c : line) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    return SendIfEnabled("STATUS=" + line);
  }
  Status ExtendTimeout(std::chrono::microseconds extra) override {
    if (extra.count() <= 0) return Status::InvalidArgument("ExtendTimeout needs a positive time");
    return SendIfEnabled("EXTEND_TIMEOUT_USEC=" + std::to_string(extra.count()));
  }
  Status WatchdogPing() override { return SendIfEnabled("WATCHDOG=1"); }
  std::chrono::microseconds WatchdogTimeout() const override {
    if (!enabled_) return std::chrono::microseconds(0);
    uint64_t usec = 0;
    // 0 when unset or meant for another process ($WATCHDOG_PID), <0 when
    // malformed: both mean "do not ping".
    int r = sd_watchdog_enabled(/*unset_environment=*/0, &usec);
    if (r < 0) {
      LOG(kWarning) << "ignoring invalid WATCHDOG_USEC/WATCHDOG_PID: " << std::strerror(-r);
      return std::chrono::microseconds(0);
    }
    if (r == 0) return std::chrono::microseconds(0);
    return std::chrono::microseconds(static_cast<int64_t>(usec));
  }

 private:
  Status SendIfEnabled(const std::string& message) {
    if (!enabled_) return Status::Ok();
    return Send(message);
  }

  Clock* clock_;
  bool enabled_ = false;
};

class WatchdogImpl final : public Watchdog {
 public:
  WatchdogImpl(WatchdogOptions options, std::chrono::microseconds period)
      : options_(std::move(options)), period_(period) {
    if (period_.count() > 0) thread_ = std::thread([this] { Run(); });
  }
  ~WatchdogImpl() override { Stop(); }

  bool enabled() const override { return period_.count() > 0; }
  std::chrono::microseconds period() const override { return period_; }
  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    std::lock_guard<std::mutex> join_lock(join_mu_);
    if (thread_.joinable()) thread_.join();
  }
  uint64_t pings_sent() const override { return pings_.load(); }
  uint64_t checks_failed() const override { return failed_.load(); }

 private:
  void Run() {
    // Check (and ping) at once, then every period. Fixed delay rather than
    // fixed rate: after a stall the thread never sends a burst of pings that
    // would hide the stall.
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      lock.unlock();
      Tick();
      lock.lock();
      cv_.wait_for(lock, period_, [this] { return stop_; });
    }
  }

  void Tick() {
    bool alive = !options_.alive || options_.alive();
    if (!alive) {
      failed_.fetch_add(1);
      return;
    }
    Status st = options_.notifier->WatchdogPing();
    if (st.ok()) {
      pings_.fetch_add(1);
    } else {
      LOG(kWarning) << "watchdog ping failed: " << st.ToString();
    }
  }

  const WatchdogOptions options_;
  const std::chrono::microseconds period_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::mutex join_mu_;
  std::thread thread_;
  std::atomic<uint64_t> pings_{0};
  std::atomic<uint64_t> failed_{0};
};

}  // namespace

std::unique_ptr<Notifier> Notifier::Create(const NotifierOptions& options) {
  return std::make_unique<NotifierImpl>(options.clock != nullptr ? options.clock : Clock::Real());
}

Result<std::unique_ptr<Watchdog>> Watchdog::Start(WatchdogOptions options) {
  if (options.notifier == nullptr) return Status::InvalidArgument("Watchdog needs a notifier");
  std::chrono::microseconds timeout =
      options.timeout.count() > 0 ? options.timeout : options.notifier->WatchdogTimeout();
  std::chrono::microseconds period(0);
  if (options.notifier->enabled() && timeout.count() > 0) period = timeout / 2;
  std::unique_ptr<Watchdog> w = std::make_unique<WatchdogImpl>(std::move(options), period);
  return w;
}

}  // namespace distilld::daemon
