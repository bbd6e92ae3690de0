// RunServe: starts the Daemon and turns signals into shutdown and reload.
#include "daemon/serve.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <iostream>

#include "daemon/daemon.h"
// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"

namespace distilld::daemon {

int RunServe(const config::Config& config, const ServeOptions& options) {
  // Signals are caught by Asio's handler (a self-pipe), installed before any
  // other thread starts, and handled on this thread only.
  boost::asio::io_context signal_loop(1);
  boost::asio::signal_set signals(signal_loop, SIGTERM, SIGINT, SIGHUP);

  DaemonOptions daemon_options;
  daemon_options.log_level_override = options.log_level_override;
  std::unique_ptr<Daemon> daemon = Daemon::Create(config, daemon_options);
  Status started = daemon->Start();
  if (!started.ok()) {
    LOG(kError) << "start-up failed: " << started.ToString();
    daemon->Shutdown();
    return 1;
  }
  for (const auto& a : daemon->ListeningAddresses()) std::cout << "distilld listening on " << a << "\n";
  std::cout.flush();
  if (options.on_started) options.on_started(*daemon);

  bool drained = true;
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
          if (options.config_path.empty()) {
            LOG(kWarning) << "SIGHUP: no config file to reload";
          } else {
            config::LoadResult next = config::LoadConfigFile(options.config_path);
            if (!next.ok()) {
              LOG(kError) << "SIGHUP: " << options.config_path << " is invalid; keeping the running config";
              for (const auto& e : next.errors) LOG(kError) << "  " << e.ToString();
            } else {
              Status s = daemon->Reload(next.config);
              if (!s.ok()) {
                LOG(kError) << "SIGHUP: reload failed: " << s.ToString();
              }
            }
          }
          signals.async_wait(on_signal);
          return;
        }
        LOG(kInfo) << (signo == SIGTERM ? "SIGTERM" : "SIGINT") << ": shutting down";
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
