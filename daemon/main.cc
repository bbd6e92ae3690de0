// distilld: serves a distilled student over KServe v2 HTTP and keeps improving
// it while it serves. This file only parses the command line and dispatches.
//
// Exit codes: 0 success; 1 runtime failure (logged); 2 usage or config error.

#include <CLI/CLI.hpp>

#include <iostream>
#include <string>

#include "common/log.h"
#include "config/config.h"
#include "daemon/serve.h"
#include "daemon/version.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;

// Loads the config or prints every error and returns false.
bool LoadOrReport(const std::string& path, distilld::config::Config* out) {
  distilld::config::LoadResult r = distilld::config::LoadConfigFile(path);
  if (!r.ok()) {
    for (const auto& e : r.errors) std::cerr << path << ": " << e.ToString() << "\n";
    return false;
  }
  *out = std::move(r.config);
  return true;
}

bool ApplyLogLevel(const std::string& level) {
  distilld::log::Level parsed;
  if (!distilld::log::ParseLevel(level, &parsed)) {
    std::cerr << "unknown log level '" << level << "' (debug, info, warning, error)\n";
    return false;
  }
  distilld::log::SetLevel(parsed);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "distilld: serves a small student network distilled from a teacher over the KServe v2\n"
      "HTTP protocol, and keeps retraining it by knowledge distillation while it serves."};
  app.footer(
      "Exit codes: 0 success, 1 runtime failure (see the log), 2 usage or configuration error.\n"
      "Without a subcommand, distilld runs `serve`.");
  app.set_version_flag("--version", std::string("distilld ") + distilld::kVersion);
  std::string log_level;
  app.add_option("--log-level", log_level, "debug, info, warning or error (overrides the config)");

  std::string config_path = "/etc/distilld/distilld.yaml";
  CLI::App* serve = app.add_subcommand("serve", "Run the daemon (the default command)");
  serve->add_option("-c,--config", config_path, "Configuration file")->capture_default_str();
  // `distilld --config FILE` is `distilld serve --config FILE`.
  app.add_option("-c,--config", config_path, "Configuration file for the default serve command");

  std::string check_path;
  CLI::App* check = app.add_subcommand("check-config", "Validate a configuration file and exit");
  check->add_option("file", check_path, "Configuration file")->required();

  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  if (!log_level.empty() && !ApplyLogLevel(log_level)) return kExitUsage;

  if (*check) {
    distilld::config::Config config;
    if (!LoadOrReport(check_path, &config)) return kExitUsage;
    std::cout << check_path << ": OK (model " << config.model.name << ", "
              << config.model.architecture.kind << " student, listen "
              << (config.server.listen.empty() ? "-" : config.server.listen) << ", unix "
              << (config.server.unix_socket.empty() ? "-" : config.server.unix_socket)
              << ", state " << config.storage.state_dir << ")\n";
    return kExitOk;
  }

  distilld::config::Config config;
  if (!LoadOrReport(config_path, &config)) return kExitUsage;
  if (log_level.empty() && !ApplyLogLevel(config.logging.level)) return kExitUsage;
  distilld::daemon::ServeOptions options;
  options.config_path = config_path;
  options.log_level_override = log_level;
  return distilld::daemon::RunServe(config, options);
}
