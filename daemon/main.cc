// distilld: serves a distilled student over KServe v2 HTTP and keeps improving
// it while it serves. This file only parses the command line and dispatches.
//
// Exit codes: 0 success; 1 runtime failure (logged); 2 usage or config error.

#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>
#include <string>

#include "common/log.h"
#include "config/config.h"
#include "daemon/demo/demo.h"
#include "daemon/serve.h"
#include "daemon/version.h"
#include "learner/compress_pipeline.h"
#include "learner/offline.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
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

  // $CONFIGURATION_DIRECTORY/distilld.yaml under systemd, else /etc/distilld.
  std::string config_path = distilld::daemon::DefaultConfigPath();
  CLI::App* serve = app.add_subcommand("serve", "Run the daemon (the default command)");
  serve->add_option("-c,--config", config_path, "Configuration file")->capture_default_str();
  // `distilld --config FILE` is `distilld serve --config FILE`.
  app.add_option("-c,--config", config_path, "Configuration file for the default serve command");

  std::string check_path;
  CLI::App* check = app.add_subcommand("check-config", "Validate a configuration file and exit");
  check->add_option("file", check_path, "Configuration file")->required();
  bool list_fields = false;
  check->add_flag("--reload-classes", list_fields,
                  "Also list every field with when a SIGHUP applies it (immediate, next_round, restart)");

  distilld::learner::TrainTeacherOptions teacher;
  CLI::App* train_teacher = app.add_subcommand("train-teacher", "Train a CNN teacher on Fashion-MNIST (IDX files)");
  train_teacher->add_option("-o,--output", teacher.output_path, "Where to write the TorchScript teacher")->required();
  train_teacher->add_option("--data", teacher.data_dir, "Directory of the IDX files")->capture_default_str();
  train_teacher->add_option("--epochs", teacher.epochs, "Training epochs")->capture_default_str()->check(CLI::Range(1, 1000));
  train_teacher->add_option("--threads", teacher.threads, "LibTorch threads")->capture_default_str()->check(CLI::Range(1, 256));
  train_teacher->add_option("--train-limit", teacher.train_limit, "Use only the first N training images (0: all)");

  distilld::learner::DistillOptions distill;
  std::string distill_arch = "cnn", distill_report;
  std::vector<int64_t> distill_hidden, distill_channels;
  CLI::App* distill_cmd = app.add_subcommand(
      "distill", "Three-stage offline distillation of a student from a teacher (hard labels at low T, "
                 "feature matching, fine-tuning)");
  distill_cmd->add_option("-t,--teacher", distill.teacher_path, "TorchScript teacher")->required();
  distill_cmd->add_option("-o,--output", distill.output_path, "Where to write the student")->required();
  distill_cmd->add_option("-s,--student", distill.student_path, "Initial student .pt (default: build --arch)");
  distill_cmd->add_option("--arch", distill_arch, "Built-in student: mlp or cnn")->capture_default_str()
      ->check(CLI::IsMember({"mlp", "cnn"}));
  distill_cmd->add_option("--hidden", distill_hidden, "Hidden widths (default: cnn 16, mlp 64)");
  distill_cmd->add_option("--channels", distill_channels, "CNN conv channels (default 8 16)");
  distill_cmd->add_option("--data", distill.data_dir, "Directory of the IDX files")->capture_default_str();
  distill_cmd->add_option("--stage1-epochs", distill.stage1_epochs)->capture_default_str();
  distill_cmd->add_option("--stage2-epochs", distill.stage2_epochs)->capture_default_str();
  distill_cmd->add_option("--stage3-epochs", distill.stage3_epochs)->capture_default_str();
  distill_cmd->add_option("--threads", distill.threads, "LibTorch threads")->capture_default_str();
  distill_cmd->add_option("--train-limit", distill.train_limit, "Use only the first N training images (0: all)");
  distill_cmd->add_flag("--labels-only", distill.labels_only, "Baseline: train the student on labels alone");
  distill_cmd->add_option("--report", distill_report, "Also write the report as JSON to this file");
  distilld::learner::CompressOptions compress;
  distill_cmd->add_option("--prune", compress.prune_fraction,
                          "Then remove this fraction of the student's parameters (structured, with KD recovery)")
      ->check(CLI::Range(0.0, 0.95));
  distill_cmd->add_option("--prune-steps", compress.prune_steps, "Gradual pruning steps")->capture_default_str();
  distill_cmd->add_option("--qat-bits", compress.qat_bits, "Then quantization-aware fine-tuning with 8- or 4-bit weights")
      ->check(CLI::IsMember({8, 4}));
  distill_cmd->add_flag("--int8", compress.int8, "Write the student with int8 layers (see learner/quantize.h)");

  distilld::daemon::DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo", "Show a student learning while it serves: Fashion-MNIST in class-incremental phases");
  demo_cmd->add_option("--state-dir", demo.state_dir, "State directory (the teacher is cached there)")
      ->capture_default_str();
  demo_cmd->add_option("--data", demo.data_dir, "Directory of the Fashion-MNIST IDX files")->capture_default_str();
  demo_cmd->add_option("--listen", demo.listen, "host:port of the daemon")->capture_default_str();
  demo_cmd->add_option("--rate", demo.rate, "Samples per second streamed")->capture_default_str()
      ->check(CLI::Range(1.0, 1e6));
  demo_cmd->add_option("--infer-rate", demo.infer_rate, "Inference requests per second")->capture_default_str()
      ->check(CLI::Range(1.0, 1e5));
  demo_cmd->add_option("--unlabelled", demo.unlabelled, "Share of the stream sent without labels")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  demo_cmd->add_option("--phase-limit", demo.phase_limit, "At most N samples per phase (0: all)");
  demo_cmd->add_option("--teacher-epochs", demo.teacher_epochs)->capture_default_str();
  demo_cmd->add_flag("--exit", demo.exit_when_done, "Stop the daemon after the summary");

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
    if (list_fields) {
      for (const auto& f : distilld::config::SchemaFields()) {
        std::cout << f.path << " " << distilld::config::ReloadClassName(f.reload) << "\n";
      }
    }
    return kExitOk;
  }

  if (*train_teacher) {
    teacher.progress = distilld::learner::TerminalProgress();
    auto r = distilld::learner::TrainTeacher(teacher);
    if (!r.ok()) {
      std::cerr << "train-teacher: " << r.status().ToString() << "\n";
      return kExitFailure;
    }
    std::cout << "teacher: " << r->path << " (" << r->params << " parameters, " << r->file_bytes
              << " bytes), test accuracy " << r->test_accuracy << ", " << r->seconds << " s\n";
    return kExitOk;
  }
  if (*distill_cmd) {
    distill.progress = distilld::learner::TerminalProgress();
    if (distill.student_path.empty()) {
      distill.student_arch.kind = distill_arch;
      if (distill_arch == "mlp") distill.student_arch.hidden = {64};
      if (!distill_hidden.empty()) distill.student_arch.hidden = distill_hidden;
      if (!distill_channels.empty()) distill.student_arch.channels = distill_channels;
    }
    auto r = distilld::learner::DistillOffline(distill);
    if (!r.ok()) {
      std::cerr << "distill: " << r.status().ToString() << "\n";
      return kExitFailure;
    }
    std::cout << r->ToText();
    if (!distill_report.empty()) std::ofstream(distill_report) << r->ToJson() << "\n";
    if (compress.prune_fraction > 0 || compress.qat_bits != 0 || compress.int8) {
      compress.student_path = distill.output_path;
      compress.teacher_path = distill.teacher_path;
      compress.output_path = distill.output_path;
      compress.data_dir = distill.data_dir;
      compress.threads = distill.threads;
      compress.progress = distill.progress;
      auto c = distilld::learner::CompressStudent(compress);
      if (!c.ok()) {
        std::cerr << "distill: compression: " << c.status().ToString() << "\n";
        return kExitFailure;
      }
      std::cout << c->ToText();
    }
    return kExitOk;
  }
  if (*demo_cmd) return distilld::daemon::RunDemo(demo);

  distilld::config::Config config;
  if (!LoadOrReport(config_path, &config)) return kExitUsage;
  if (log_level.empty() && !ApplyLogLevel(config.logging.level)) return kExitUsage;
  distilld::daemon::ServeOptions options;
  options.config_path = config_path;
  options.log_level_override = log_level;
  return distilld::daemon::RunServe(config, options);
}
