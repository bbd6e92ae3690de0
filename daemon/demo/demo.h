// `distilld demo`: the main job on real data. Trains (or reuses) a teacher on
// Fashion-MNIST, distills a first student on the first two classes, starts
// the daemon, streams the rest of the training set through POST /v1/samples
// in class-incremental phases of two classes (part of it unlabelled) while a
// second client sends inference traffic and checks every answer, and ends
// with a per-version summary. Everything runs in this process except that the
// clients talk to the daemon over real HTTP on loopback.
#pragma once

#include <cstdint>
#include <string>

namespace distilld::daemon {

struct DemoOptions {
  std::string state_dir = "demo-state";  // teacher.pt is cached here across runs
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string listen = "127.0.0.1:8080";
  double rate = 2000;             // samples per second streamed to /v1/samples
  double unlabelled = 0.5;        // share of the stream sent without a label
  int64_t phase_limit = 0;        // >0: at most this many samples per phase (quick runs)
  double infer_rate = 200;        // inference requests per second
  int teacher_epochs = 1;        // ~86% test accuracy; about 2-4 minutes on 2 cores
  bool exit_when_done = false;    // stop the daemon after the summary
  int threads = 2;                // LibTorch threads for the offline steps
};

// Returns the process exit code: 0 when the demo ran with zero failed
// requests, 1 otherwise (the reason is printed).
int RunDemo(const DemoOptions& options);

}  // namespace distilld::daemon
