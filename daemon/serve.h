// The `distilld serve` command: opens the state dir, loads the active student,
// starts the listeners (and, once built, the learner) and runs until SIGTERM
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
int RunServe(const config::Config& config, const ServeOptions& options);

}  // namespace distilld::daemon
