// The `distilld serve` command: opens the state dir, loads the active student,
// starts the listeners and the learner and runs until SIGTERM
// or SIGINT. Called from main() after the config is loaded and validated.
#pragma once

#include <functional>
#include <string>

#include "config/config.h"

namespace distilld::daemon {

struct ServeOptions {
  // Path the config was loaded from, re-read on SIGHUP. "" disables reload.
  std::string config_path;
  // --log-level given on the command line; it wins over the config on reload.
  std::string log_level_override;
  // Called once the daemon serves (listeners accept), before waiting for
  // signals. Tests use it to learn the bound port; main() leaves it empty.
  std::function<void(class Daemon&)> on_started;
};

// Returns the process exit code: 0 after a clean shutdown, 1 when start-up or
// serving failed (the reason is logged).
//
// Under systemd (Type=notify) it sends READY=1 once Daemon::Start() returned
// (store open, student loaded and warmed, listeners accepting), STATUS= lines
// (active version, learner state; refreshed every second when they change),
// RELOADING=1/READY=1 around SIGHUP and STOPPING=1 on SIGTERM/SIGINT; with
// $WATCHDOG_USEC it pings WATCHDOG=1 while the I/O loop, every inference
// thread and the learner thread beat their heartbeats. Sockets passed by
// systemd ($LISTEN_FDS) replace server.listen/server.unix_socket, and
// ApplySystemdDirectories() is applied to the config (also on reload).
int RunServe(const config::Config& config, const ServeOptions& options);

// The systemd directory rule: a relative storage.state_dir (the default
// "./state" included) is taken relative to $STATE_DIRECTORY, and a relative
// server.unix_socket relative to $RUNTIME_DIRECTORY, when those are set (the
// first entry of a ":"-separated list). Absolute paths and unset variables
// leave the config as it is; an empty unix_socket stays disabled.
void ApplySystemdDirectories(config::Config* config);

// The config file read when --config is not given:
// $CONFIGURATION_DIRECTORY/distilld.yaml when that variable is set (systemd's
// ConfigurationDirectory=), else /etc/distilld/distilld.yaml.
std::string DefaultConfigPath();

}  // namespace distilld::daemon
