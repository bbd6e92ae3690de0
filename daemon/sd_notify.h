// systemd service notification (sd_notify) and the watchdog that proves the
// daemon is alive.
//
// Notifier sends the Type=notify protocol messages: READY=1 once the daemon
// serves, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP
// reload, STOPPING=1 at shutdown and STATUS= lines for `systemctl status`.
// Without $NOTIFY_SOCKET (not started by systemd) every call is a no-op that
// returns OK, so the daemon calls it unconditionally.
//
// Watchdog is a thread that sends WATCHDOG=1 at half of $WATCHDOG_USEC, but
// only while a liveness check supplied by the daemon passes. A hung I/O loop,
// inference or learner thread therefore stops the pings and systemd restarts
// the service (Restart=on-failure, WatchdogSec=). Heartbeat and
// HeartbeatCheck build such a check from per-thread progress markers.
//
//   auto notifier = Notifier::Create({});
//   ... open store, load + warm model, listeners accept ...
//   notifier->Ready();
//   auto watchdog = Watchdog::Start({.notifier = notifier.get(), .alive = check});
//   ... SIGHUP: notifier->Reloading(); reload; notifier->Ready();
//   ... SIGTERM: notifier->Stopping(); watchdog->Stop(); drain
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/heartbeat.h"
#include "common/status.h"

namespace distilld::daemon {

struct NotifierOptions {
  // Source of MONOTONIC_USEC in RELOADING=1. Must be CLOCK_MONOTONIC-based in
  // production, which Clock::Real() is. Default (nullptr): Clock::Real().
  // Change only in tests. Not owned; must outlive the Notifier.
  Clock* clock = nullptr;
};

// Sends sd_notify messages to the socket named by $NOTIFY_SOCKET. The
// environment is left set (libsystemd reads it on every call); distilld starts
// no child processes that could misuse it. Thread-safe: every call is one
// independent datagram.
class Notifier {
 public:
  static std::unique_ptr<Notifier> Create(const NotifierOptions& options);
  virtual ~Notifier() = default;

  // True if $NOTIFY_SOCKET was set at Create(); otherwise all calls no-op.
  virtual bool enabled() const = 0;

  // READY=1. Call only when the store is open, the active student is loaded
  // and warmed, and the listeners accept; also after a reload finished.
  virtual Status Ready() = 0;
  // RELOADING=1 with MONOTONIC_USEC=<now>. systemd then waits for READY=1.
  virtual Status Reloading() = 0;
  // STOPPING=1: shutdown (drain) has begun.
  virtual Status Stopping() = 0;
  // STATUS=<text> (one line; newlines are replaced by spaces), shown by
  // `systemctl status`, e.g. "serving v000004; learner idle, 312 new samples".
  // Named SetStatus, not Status, so it does not hide the Status type.
  virtual Status SetStatus(std::string_view text) = 0;
  // EXTEND_TIMEOUT_USEC=<us>: asks for more start-up or stop time (opening a
  // large store, warming a model) instead of a long TimeoutStartSec=.
  virtual Status ExtendTimeout(std::chrono::microseconds extra) = 0;
  // One WATCHDOG=1 ping. Normally the Watchdog thread calls it.
  virtual Status WatchdogPing() = 0;
  // The systemd watchdog timeout ($WATCHDOG_USEC, honouring $WATCHDOG_PID), or
  // zero when systemd does not expect pings.
  virtual std::chrono::microseconds WatchdogTimeout() const = 0;
};

struct WatchdogOptions {
  // Where pings go. Not owned; must outlive the Watchdog. Required.
  Notifier* notifier = nullptr;

  // Called once per period on the watchdog thread; a ping is sent only when it
  // returns true. It must be thread-safe and fast (it reads heartbeats; it
  // never waits on the threads it checks). Default (empty): always alive,
  // which proves only that the process is scheduled.
  std::function<bool()> alive;

  // The systemd watchdog timeout. Default zero: the notifier's
  // WatchdogTimeout(), i.e. $WATCHDOG_USEC. Pings go out every half of it,
  // as sd_watchdog_enabled(3) recommends. Set only in tests.
  std::chrono::microseconds timeout{0};
};

// Runs the ping thread. Start it after READY=1 (systemd arms the watchdog
// when start-up completes). Pings are timed on the real steady clock, as
// systemd times them; staleness is judged by the heartbeats' injected clock.
// A thread that stops beating is therefore restarted at most
// max_age + timeout after its last beat. Thread-safe; Stop() and the
// destructor join.
class Watchdog {
 public:
  // Returns a Watchdog; when the timeout is zero (no watchdog configured) or
  // the notifier is disabled, it starts no thread and enabled() is false.
  // InvalidArgument if options.notifier is null.
  static Result<std::unique_ptr<Watchdog>> Start(WatchdogOptions options);
  virtual ~Watchdog() = default;

  virtual bool enabled() const = 0;
  // Period between checks: half the timeout (zero when disabled).
  virtual std::chrono::microseconds period() const = 0;
  // Stops pinging and joins the thread. Idempotent. Call at the start of
  // shutdown, after Stopping(): systemd stops expecting pings then anyway.
  virtual void Stop() = 0;
  // Pings sent and checks that failed (each failed check withholds a ping).
  virtual uint64_t pings_sent() const = 0;
  virtual uint64_t checks_failed() const = 0;
};

}  // namespace distilld::daemon
