// RunServe: starts the Daemon, turns signals into shutdown and reload, and
// speaks systemd's notify/watchdog protocol.
#include "daemon/serve.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <sstream>

#include "common/fd_limit.h"
#include "daemon/daemon.h"
#include "daemon/http/listen_fds.h"
#include "daemon/sd_notify.h"
#include "learner/version_store.h"
// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"

namespace distilld::daemon {
namespace {

namespace fs = std::filesystem;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// How often the signal loop posts an I/O-loop heartbeat and refreshes STATUS=.
constexpr milliseconds kIoBeatPeriod{200};
constexpr milliseconds kStatusPeriod{1000};
// The learner beats per poll and per training step, but evaluation, saving
// and warming a new version run between beats: give it at least this long.
constexpr microseconds kLearnerMinAge{60'000'000};
// A heartbeat may be this old before the watchdog withholds pings: the
// systemd timeout, but never less than this (scheduling noise on 2 cores).
constexpr microseconds kMinAge{1'000'000};

// First entry of a ":"-separated systemd directory list, or "" if unset.
std::string SystemdDir(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return "";
  std::string s(v);
  return s.substr(0, s.find(':'));
}

// "serving v000004 (http://127.0.0.1:8080); learner idle, 3 rounds, last promoted"
std::string StatusLine(const Daemon& daemon) {
  std::ostringstream os;
  auto active = daemon.models() ? daemon.models()->Active() : nullptr;
  os << "serving " << (active ? learner::VersionStore::Name(active->version()) : "no model");
  const auto addresses = daemon.ListeningAddresses();
  if (!addresses.empty()) {
    os << " (";
    for (size_t i = 0; i < addresses.size(); ++i) os << (i ? ", " : "") << addresses[i];
    os << ")";
  }
  const learner::IncrementalDistiller* d = daemon.distiller();
  if (d == nullptr) {
    os << "; learner off";
  } else {
    learner::DistillerProgress p = d->Progress();
    os << "; learner " << learner::LearnerStateName(p.state);
    if (p.state == learner::LearnerState::kTraining) os << " round " << p.round_id << " step " << p.step << "/" << p.total_steps;
    os << ", " << p.rounds_completed << " round" << (p.rounds_completed == 1 ? "" : "s");
    if (p.last_outcome) os << ", last " << storage::RoundOutcomeName(*p.last_outcome);
  }
  return os.str();
}

// The watchdog's liveness check over every thread that must make progress.
std::unique_ptr<HeartbeatCheck> BuildCheck(const Daemon& daemon, const Heartbeat* io_beat, microseconds timeout) {
  const microseconds max_age = std::max(timeout, kMinAge);
  std::vector<HeartbeatCheck::Entry> entries;
  entries.push_back({"io loop", io_beat, max_age});
  if (daemon.batcher() != nullptr) {
    int i = 0;
    for (const Heartbeat* b : daemon.batcher()->heartbeats()) {
      entries.push_back({"inference " + std::to_string(i++), b, max_age});
    }
  }
  if (daemon.learner_heartbeat() != nullptr) {
    entries.push_back({"learner", daemon.learner_heartbeat(), std::max(max_age, kLearnerMinAge)});
  }
  return std::make_unique<HeartbeatCheck>(std::move(entries));
}

// Test-only fault injection (DISTILLD_TEST_HOOKS builds): a handler that
// blocks one I/O thread until Release(), i.e. a hung serving loop.
class IoStall {
 public:
  void Block() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return released_; });
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
};

void Notify(const Status& s, const char* what) {
  if (!s.ok()) {
    LOG(kWarning) << "sd_notify " << what << ": " << s.ToString();
  }
}

}  // namespace

void ApplySystemdDirectories(config::Config* config) {
  const std::string state = SystemdDir("STATE_DIRECTORY");
  if (!state.empty() && fs::path(config->storage.state_dir).is_relative()) {
    config->storage.state_dir = (fs::path(state) / config->storage.state_dir).lexically_normal().string();
  }
  const std::string runtime = SystemdDir("RUNTIME_DIRECTORY");
  if (!runtime.empty() && !config->server.unix_socket.empty() &&
      fs::path(config->server.unix_socket).is_relative()) {
    config->server.unix_socket = (fs::path(runtime) / config->server.unix_socket).lexically_normal().string();
  }
}

std::string DefaultConfigPath() {
  const std::string dir = SystemdDir("CONFIGURATION_DIRECTORY");
  return dir.empty() ? "/etc/distilld/distilld.yaml" : (fs::path(dir) / "distilld.yaml").string();
}

int RunServe(const config::Config& loaded_config, const ServeOptions& options) {
  // Signals are caught by Asio's handler (a self-pipe), installed before any
  // other thread starts, and handled on this thread only.
  boost::asio::io_context signal_loop(1);
  boost::asio::signal_set signals(signal_loop, SIGTERM, SIGINT, SIGHUP);
  std::unique_ptr<Notifier> notifier = Notifier::Create({});

  config::Config config = loaded_config;
  ApplySystemdDirectories(&config);

  DaemonOptions daemon_options;
  daemon_options.log_level_override = options.log_level_override;
  // Before any thread starts: it reads and unsets $LISTEN_FDS.
  Result<InheritedSockets> inherited = TakeListenFds({});
  if (!inherited.ok()) {
    LOG(kError) << "socket activation: " << inherited.status().ToString();
    Notify(notifier->SetStatus("start-up failed: " + inherited.status().ToString()), "STATUS");
    return 1;
  }
  for (const auto& s : inherited->tcp) LOG(kInfo) << "socket activation: TCP " << s.local_address;
  for (const auto& s : inherited->unix_stream) LOG(kInfo) << "socket activation: unix " << s.local_address;
  daemon_options.listen_sockets = std::move(*inherited);

  // One descriptor per connection, plus RocksDB's files, models and logs.
  const uint64_t want_fds = static_cast<uint64_t>(config.server.max_connections) + 1024;
  Result<uint64_t> fds = RaiseFdLimit(want_fds);
  if (!fds.ok()) {
    LOG(kWarning) << "open-file limit: " << fds.status().ToString();
  } else if (*fds < want_fds) {
    LOG(kWarning) << "open-file limit " << *fds << " (the hard limit) is below server.max_connections + 1024 = "
                  << want_fds << ": connections beyond it are refused by the kernel, not evicted; raise "
                  << "LimitNOFILE (systemd) or `ulimit -Hn`";
  }
  Notify(notifier->SetStatus("starting: opening " + config.storage.state_dir + ", loading the active student"),
         "STATUS");
  std::unique_ptr<Daemon> daemon = Daemon::Create(config, daemon_options);
  Status started = daemon->Start();
  if (!started.ok()) {
    LOG(kError) << "start-up failed: " << started.ToString();
    Notify(notifier->SetStatus("start-up failed: " + started.ToString()), "STATUS");
    daemon->Shutdown();
    return 1;
  }
  for (const auto& a : daemon->ListeningAddresses()) std::cout << "distilld listening on " << a << "\n";
  std::cout.flush();
  if (options.on_started) options.on_started(*daemon);

  // Start() returned: store open, student warmed, listeners accepting.
  std::string status = StatusLine(*daemon);
  Notify(notifier->SetStatus(status), "STATUS");
  Notify(notifier->Ready(), "READY");

  // Liveness. The I/O loop proves itself by running a handler this loop
  // posts; at most one is in flight, so a hung loop does not pile them up.
  // Shared with the posted handlers, which the server may destroy unrun.
  auto io_beat = std::make_shared<Heartbeat>();
  auto io_beat_pending = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<HeartbeatCheck> check = BuildCheck(*daemon, io_beat.get(), notifier->WatchdogTimeout());
  std::unique_ptr<Watchdog> watchdog;
  {
    WatchdogOptions wo;
    wo.notifier = notifier.get();
    wo.alive = check->AsFunction();
    Result<std::unique_ptr<Watchdog>> w = Watchdog::Start(std::move(wo));
    if (!w.ok()) {
      LOG(kError) << "watchdog: " << w.status().ToString();
    } else {
      watchdog = std::move(*w);
      if (watchdog->enabled()) {
        LOG(kInfo) << "systemd watchdog: pinging every " << watchdog->period().count() / 1000 << " ms while alive";
      }
    }
  }
  const bool beat_io = watchdog && watchdog->enabled();
  const bool refresh_status = notifier->enabled();

  boost::asio::steady_timer tick(signal_loop);
  auto last_status = std::chrono::steady_clock::now();
  std::function<void(const boost::system::error_code&)> on_tick = [&](const boost::system::error_code& ec) {
    if (ec) return;
    if (beat_io && !io_beat_pending->exchange(true)) {
      daemon->server()->Post([beat = io_beat, io_beat_pending] {
        beat->Beat();
        io_beat_pending->store(false);
      });
    }
    const auto now = std::chrono::steady_clock::now();
    if (refresh_status && now - last_status >= kStatusPeriod) {
      last_status = now;
      std::string next = StatusLine(*daemon);
      if (next != status) {
        status = std::move(next);
        Notify(notifier->SetStatus(status), "STATUS");
      }
    }
    tick.expires_after(kIoBeatPeriod);
    tick.async_wait(on_tick);
  };
  if (beat_io || refresh_status) {
    tick.expires_after(kIoBeatPeriod);
    tick.async_wait(on_tick);
  }

  auto stall = std::make_shared<IoStall>();
  boost::asio::steady_timer stall_timer(signal_loop);
#ifdef DISTILLD_TEST_HOOKS
  // DISTILLD_TEST_STALL_IO=<ms>: that long after READY=1, block an I/O thread
  // until shutdown begins, so a test sees the watchdog pings stop. Test
  // builds only; run the test with server.io_threads: 1.
  if (const char* v = std::getenv("DISTILLD_TEST_STALL_IO"); v != nullptr && *v != '\0') {
    stall_timer.expires_after(milliseconds(std::strtoll(v, nullptr, 10)));
    stall_timer.async_wait([&daemon, stall](const boost::system::error_code& ec) {
      if (ec) return;
      LOG(kWarning) << "test hook DISTILLD_TEST_STALL_IO: blocking the I/O loop until shutdown";
      daemon->server()->Post([stall] { stall->Block(); });
    });
  }
#endif

  bool drained = true;
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
          Notify(notifier->Reloading(), "RELOADING");
          if (options.config_path.empty()) {
            LOG(kWarning) << "SIGHUP: no config file to reload";
          } else {
            config::LoadResult next = config::LoadConfigFile(options.config_path);
            if (!next.ok()) {
              LOG(kError) << "SIGHUP: " << options.config_path << " is invalid; keeping the running config";
              for (const auto& e : next.errors) LOG(kError) << "  " << e.ToString();
            } else {
              ApplySystemdDirectories(&next.config);
              Status s = daemon->Reload(next.config);
              if (!s.ok()) {
                LOG(kError) << "SIGHUP: reload failed: " << s.ToString();
              }
            }
          }
          // READY=1 also after a rejected reload: the old config still serves.
          status = StatusLine(*daemon);
          Notify(notifier->SetStatus(status), "STATUS");
          Notify(notifier->Ready(), "READY");
          signals.async_wait(on_signal);
          return;
        }
        LOG(kInfo) << (signo == SIGTERM ? "SIGTERM" : "SIGINT") << ": shutting down";
        Notify(notifier->Stopping(), "STOPPING");
        Notify(notifier->SetStatus("stopping: draining connections"), "STATUS");
        if (watchdog) watchdog->Stop();
        tick.cancel();
        stall_timer.cancel();
        stall->Release();
        drained = daemon->Shutdown();
        signal_loop.stop();
      };
  signals.async_wait(on_signal);
  signal_loop.run();
  if (!drained) {
    LOG(kWarning) << "some requests were cut off by the drain timeout";
  }
  return 0;
}

}  // namespace distilld::daemon
