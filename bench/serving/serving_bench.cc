// serving_bench: HTTP inference throughput and latency with wrk, against an
// in-process baseline measured in the same run, and p99 during hot swaps.
//
// It hosts the same Daemon that `distilld serve` runs (in this process, so it
// can trigger 50 version swaps while wrk runs and time each one), writes single-sample
// Fashion-MNIST request bodies (JSON and binary), runs wrk with
// infer_json.lua / infer_binary.lua at 1, 16 and 64 connections on loopback,
// and writes a Markdown report. In the same run it also measures the served
// rate of an int8 student against the float one (a second Daemon with
// model.precision: int8) and p99 while a learner round runs in the daemon
// (teacher: DISTILLD_TEACHER, or an untrained network of the default teacher
// architecture: a round's cost does not depend on the teacher's accuracy).
//
//   serving_bench <scripts dir> <output.md> [seconds per run]
#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "daemon/daemon.h"
#include "learner/idx_dataset.h"
#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "learner/offline.h"
#include "bench/serving/bench_util.h"
#include "tests/support/temp_dir.h"
// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"

namespace fs = std::filesystem;
using namespace distilld;

using bench::AppendFloat;
using bench::DistillerProgressSummary;
using bench::Fixed;
using bench::ForwardRate;
using bench::LoadAverage;
using bench::RunWrk;
using bench::WrkResult;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: serving_bench <scripts dir> <output.md> [seconds per run]\n";
    return 2;
  }
  const std::string scripts = argv[1];
  const std::string out_path = argv[2];
  const int seconds = argc > 3 ? std::atoi(argv[3]) : 10;
  distilld::log::SetLevel(distilld::log::Level::kWarning);
  at::set_num_threads(1);

  testing::TempDir dir;
  // The learner needs a teacher. A round's cost (teacher forward passes,
  // training steps) does not depend on how good the teacher is, so without
  // DISTILLD_TEACHER an untrained network of the default teacher
  // architecture (CNN) stands in.
  const char* teacher_env = std::getenv("DISTILLD_TEACHER");
  std::string teacher_path = teacher_env != nullptr ? teacher_env : "";
  const bool untrained_teacher = teacher_path.empty();
  if (untrained_teacher) {
    teacher_path = dir.str("teacher.pt");
    auto teacher = learner::BuildModel(learner::TrainTeacherOptions{}.arch, 7);
    if (!teacher.ok() || !learner::SaveModelAtomic(*teacher, teacher_path).ok()) {
      std::cerr << "cannot build the stand-in teacher\n";
      return 1;
    }
  }
  config::Config cfg;  // defaults, as shipped, except:
  cfg.server.listen = "127.0.0.1:0";
  cfg.storage.state_dir = dir.str("state");
  cfg.storage.sync = false;
  cfg.model.teacher = teacher_path;
  // Rounds only when the benchmark asks for one.
  cfg.learner.trigger_count = 1'000'000'000;
  cfg.learner.trigger_interval_s = 30 * 86400;
  // Enough epochs that the round's training phase outlasts a wrk run (with
  // the default 2 it ends in a few seconds), so p99 is measured while the
  // learner really trains.
  cfg.learner.epochs = 60;
  // For trying other thread splits; the report uses the shipped defaults.
  if (const char* v = std::getenv("SERVING_BENCH_IO_THREADS")) cfg.server.io_threads = std::atoi(v);
  if (const char* v = std::getenv("SERVING_BENCH_INFERENCE_THREADS")) cfg.batching.inference_threads = std::atoi(v);
  auto daemon = daemon::Daemon::Create(cfg);
  Status s = daemon->Start();
  if (!s.ok()) {
    std::cerr << "start: " << s.ToString() << "\n";
    return 1;
  }
  const uint16_t port = daemon->tcp_port();
  const std::string load_before = LoadAverage();

  // Request bodies: the first 64 Fashion-MNIST test images.
  auto data = learner::LoadIdxDataset(learner::kDefaultFashionMnistDir, "t10k", 64);
  if (!data.ok()) {
    std::cerr << "dataset: " << data.status().ToString() << "\n";
    return 1;
  }
  const std::string bodies = dir.str("bodies");
  fs::create_directories(bodies);
  const std::string bin_header =
      R"({"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","parameters":{"binary_data_size":3136}}],)"
      R"("outputs":[{"name":"label","parameters":{"binary_data":true}}]})";
  size_t json_bytes = 0;
  for (int64_t i = 0; i < data->size(); ++i) {
    at::Tensor img = data->images[i].contiguous();
    const float* px = img.data_ptr<float>();
    std::string json = R"({"id":")" + std::to_string(i) +
                       R"(","inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[)";
    for (int j = 0; j < 784; ++j) {
      if (j) json += ',';
      AppendFloat(&json, px[j]);
    }
    json += R"(]}],"outputs":[{"name":"label"}]})";
    json_bytes += json.size();
    std::ofstream(bodies + "/json_" + std::to_string(i) + ".txt", std::ios::binary) << json;
    std::ofstream(bodies + "/bin_" + std::to_string(i) + ".dat", std::ios::binary)
        << bin_header << std::string(reinterpret_cast<const char*>(px), 784 * 4);
  }
  const std::string env = "BODY_DIR=" + bodies + " BODY_COUNT=" + std::to_string(data->size()) +
                          " HEADER_LENGTH=" + std::to_string(bin_header.size());

  // In-process baseline: the served module itself, batch 1 and 64, idle server.
  auto served = daemon->models()->Active();
  double us1 = 0, us64 = 0;
  const double rate1 = ForwardRate(*served, 1, 3.0, &us1);
  const double rate64 = ForwardRate(*served, 64, 3.0, &us64);
  served.reset();
  std::cerr << "baseline: batch 1 " << rate1 << " samples/s, batch 64 " << rate64 << " samples/s\n";

  // p99 during 50 hot swaps vs steady state, same load (binary, 64
  // connections). The swaps are paced over the wrk run; `swap_seconds` says
  // how long they really took (a publish prepares at lower priority, so
  // under load it can take longer than its slot).
  struct SwapResult {
    bool ok = false;
    WrkResult steady, during;
    int swaps_ok = 0;
    double swap_seconds = 0;
  };
  const std::string bin_script = scripts + "/infer_binary.lua";
  auto MeasureSwaps = [&]() -> SwapResult {
    SwapResult out;
    learner::ArchSpec spec;
    spec.hidden = cfg.model.architecture.hidden;
    std::vector<storage::VersionRecord> records;
    for (uint64_t seed : {1001u, 1002u}) {
      auto m = learner::BuildModel(spec, seed);
      std::string rel = "models/bench-" + std::to_string(seed) + ".pt";
      auto saved = learner::SaveModelAtomic(*m, (fs::path(cfg.storage.state_dir) / rel).string());
      if (!saved.ok()) {
        std::cerr << saved.status().ToString() << "\n";
        return out;
      }
      storage::VersionRecord r;
      r.path = rel;
      r.sha256 = saved->sha256;
      records.push_back(r);
    }
    out.steady = RunWrk(env, bin_script, 64, seconds, port);
    std::thread load([&] { out.during = RunWrk(env, bin_script, 64, seconds, port); });
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const auto swap_window = std::chrono::duration<double>(seconds - 1.5);
    const auto swap_start = std::chrono::steady_clock::now();
    for (int i = 0; i < 50; ++i) {
      storage::VersionRecord r = records[i % 2];
      r.id = 100 + i;
      if (daemon->models()->Publish(r).ok()) ++out.swaps_ok;
      std::this_thread::sleep_until(swap_start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                     swap_window * ((i + 1) / 50.0)));
    }
    out.swap_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - swap_start).count();
    load.join();
    std::cerr << "steady p99 " << out.steady.p99_ms << " ms, during swaps p99 " << out.during.p99_ms
              << " ms (ratio " << Fixed(out.during.p99_ms / out.steady.p99_ms, 2) << "x), swaps " << out.swaps_ok
              << " in " << out.swap_seconds << " s\n";
    out.ok = true;
    return out;
  };

  // int8 vs float student, served: a second daemon with
  // model.precision int8 (same initial weights: same seed), learner off;
  // float and int8 runs alternate at each connection count.
  struct PrecisionRow {
    int connections;
    WrkResult f, q;
  };
  auto MeasurePrecision = [&](std::vector<PrecisionRow>& rows, double& int8_rate1, double& int8_us1) -> bool {
    config::Config qcfg = cfg;
    qcfg.storage.state_dir = dir.str("state-int8");
    qcfg.model.precision = config::Precision::kInt8;
    qcfg.model.teacher.clear();
    qcfg.learner.enabled = false;
    auto qdaemon = daemon::Daemon::Create(qcfg);
    Status qs = qdaemon->Start();
    if (!qs.ok()) {
      std::cerr << "int8 daemon: " << qs.ToString() << "\n";
      return false;
    }
    auto qserved = qdaemon->models()->Active();
    int8_rate1 = ForwardRate(*qserved, 1, 3.0, &int8_us1);
    qserved.reset();
    std::cerr << "int8 baseline: batch 1 " << int8_rate1 << " samples/s (float " << rate1 << ")\n";
    for (int c : {1, 16, 64}) {
      PrecisionRow row{c, RunWrk(env, bin_script, c, seconds, port), RunWrk(env, bin_script, c, seconds, qdaemon->tcp_port())};
      if (!row.f.ok || !row.q.ok) {
        std::cerr << "wrk failed:\n" << row.f.raw << row.q.raw << "\n";
        return false;
      }
      std::cerr << "c=" << c << ": float " << row.f.rps << " req/s, int8 " << row.q.rps << " req/s ("
                << Fixed(row.q.rps / row.f.rps, 2) << "x)\n";
      rows.push_back(row);
    }
    qdaemon->Shutdown();
    return true;
  };

  // SERVING_BENCH_QUICK=1: binary at 64 connections only, three runs, no
  // report; SERVING_BENCH_QUICK=swap: the hot-swap measurement, three times;
  // SERVING_BENCH_QUICK=int8: the int8-vs-float served rates, once;
  // SERVING_BENCH_QUICK=ingest: steady windows after storing 60,000 samples,
  // then during a learner round, with CPU ticks per thread. For profiling and trying a change quickly; the report needs the
  // full run.
  if (const char* quick = std::getenv("SERVING_BENCH_QUICK"); quick != nullptr && std::string(quick) == "swap") {
    for (int i = 0; i < 3; ++i) MeasureSwaps();
    daemon->Shutdown();
    return 0;
  }
  if (const char* quick = std::getenv("SERVING_BENCH_QUICK"); quick != nullptr && std::string(quick) == "int8") {
    std::vector<PrecisionRow> rows;
    double q1 = 0, us1 = 0;
    const bool ok = MeasurePrecision(rows, q1, us1);
    daemon->Shutdown();
    return ok ? 0 : 1;
  }
  if (const char* quick = std::getenv("SERVING_BENCH_QUICK"); quick != nullptr && std::string(quick) == "ingest") {
    // Steady p99 before and after storing 60,000 samples, as the learner-round
    // section does, to see how long a large ingest keeps the tail up.
    WrkResult before = RunWrk(env, scripts + "/infer_binary.lua", 64, seconds, port);
    std::cerr << "before ingest: p99 " << before.p99_ms << " ms, " << before.rps << " req/s\n";
    auto train = learner::LoadIdxDataset(learner::kDefaultFashionMnistDir, "train", 60000);
    if (!train.ok()) return 1;
    for (int64_t b = 0; b < train->size(); b += 1000) {
      auto samples = learner::DatasetToSamples(*train, b, std::min<int64_t>(b + 1000, train->size()));
      if (!daemon->store()->AppendIncoming(samples).ok()) return 1;
    }
    (void)daemon->store()->Flush();
    // CPU ticks per thread name of this process (for where the time goes).
    auto ticks = [] {
      std::map<std::string, long> out;
      for (const auto& t : fs::directory_iterator("/proc/self/task")) {
        std::ifstream stat(t.path() / "stat");
        std::string line;
        std::getline(stat, line);
        std::string name = line.substr(line.find('(') + 1, line.rfind(')') - line.find('(') - 1);
        std::istringstream rest(line.substr(line.rfind(')') + 2));
        std::string f;
        long ut = 0, st = 0;
        for (int i = 3; i <= 15 && rest >> f; ++i) {
          if (i == 14) ut = std::stol(f);
          if (i == 15) st = std::stol(f);
        }
        out[name + "/" + t.path().filename().string()] += ut + st;
      }
      return out;
    };
    auto window = [&](const std::string& label) {
      auto t0 = ticks();
      WrkResult r = RunWrk(env, scripts + "/infer_binary.lua", 64, seconds, port);
      auto t1 = ticks();
      std::cerr << label << ": p99 " << r.p99_ms << " ms, " << r.rps << " req/s; busy threads:";
      for (const auto& [k, v] : t1) {
        const long d = v - (t0.count(k) ? t0[k] : 0);
        if (d > 10) std::cerr << " " << k << "=" << d;
      }
      std::cerr << " (ticks of 10 ms)\n";
    };
    for (int i = 0; i < 2; ++i) window("steady after the flush");
    if (auto r = daemon->distiller() != nullptr ? daemon->distiller()->RequestRound()
                                                 : Result<learner::RoundRequest>(Status::FailedPrecondition("off"));
        r.ok() && r->kind != learner::RoundRequest::Kind::kNothingNew) {
      for (int i = 0; i < 4; ++i) window("during the round (" + std::string(learner::LearnerStateName(daemon->distiller()->Progress().state)) + ")");
    }
    daemon->Shutdown();
    return 0;
  }
  if (std::getenv("SERVING_BENCH_QUICK") != nullptr) {
    for (int i = 0; i < 3; ++i) {
      WrkResult r = RunWrk(env, scripts + "/infer_binary.lua", 64, seconds, port);
      std::cerr << "binary c=64: " << r.rps << " req/s (" << Fixed(r.rps / rate1, 3) << "x of batch 1), p50 "
                << r.p50_ms << " ms, p99 " << r.p99_ms << " ms, errors " << r.errors << "\n";
    }
    daemon->Shutdown();
    return 0;
  }
  struct Row {
    std::string mode;
    int connections;
    WrkResult r;
  };
  std::vector<Row> rows;
  for (const std::string mode : {"json", "binary"}) {
    for (int c : {1, 16, 64}) {
      WrkResult r = RunWrk(env, scripts + "/infer_" + mode + ".lua", c, seconds, port);
      if (!r.ok) {
        std::cerr << "wrk failed:\n" << r.raw << "\n";
        return 1;
      }
      std::cerr << mode << " c=" << c << ": " << r.rps << " req/s, p50 " << r.p50_ms << " ms, p99 " << r.p99_ms
                << " ms, errors " << r.errors << ", non-2xx " << r.non2xx << "\n";
      rows.push_back({mode, c, r});
    }
  }

  // Forward passes inline on the I/O loops (the default) vs the previous
  // default, one I/O thread plus one inference thread with early dispatch:
  // a second daemon, learner off; runs alternate.
  struct ModeRow {
    int connections;
    WrkResult inline_loops, threaded;
  };
  std::vector<ModeRow> mode_rows;
  config::Config tcfg = cfg;
  {
    tcfg.storage.state_dir = dir.str("state-threaded");
    tcfg.server.io_threads = 1;
    tcfg.batching.inference_threads = 1;
    tcfg.batching.early_dispatch = true;
    tcfg.model.teacher.clear();
    tcfg.learner.enabled = false;
    auto tdaemon = daemon::Daemon::Create(tcfg);
    Status ts = tdaemon->Start();
    if (!ts.ok()) {
      std::cerr << "threaded daemon: " << ts.ToString() << "\n";
      return 1;
    }
    const std::string script = scripts + "/infer_binary.lua";
    for (int c : {1, 64}) {
      ModeRow row{c, RunWrk(env, script, c, seconds, port), RunWrk(env, script, c, seconds, tdaemon->tcp_port())};
      std::cerr << "c=" << c << ": inline " << row.inline_loops.rps << " req/s p99 " << row.inline_loops.p99_ms
                << " ms, inference thread " << row.threaded.rps << " req/s p99 " << row.threaded.p99_ms << " ms\n";
      mode_rows.push_back(row);
    }
    tdaemon->Shutdown();
  }

  std::vector<PrecisionRow> precision_rows;
  double int8_rate1 = 0, int8_us1 = 0;
  if (!MeasurePrecision(precision_rows, int8_rate1, int8_us1)) return 1;

  // A 10-s window's p99 moves by tens of percent between two steady runs on
  // this machine, so the swap measurement is repeated (steady, then swaps,
  // three times) and judged on the median of the three ratios.
  std::vector<SwapResult> swap_runs;
  for (int i = 0; i < 3; ++i) {
    swap_runs.push_back(MeasureSwaps());
    if (!swap_runs.back().ok) return 1;
  }
  std::vector<double> swap_ratios;
  for (const auto& r : swap_runs) swap_ratios.push_back(r.during.p99_ms / r.steady.p99_ms);
  std::vector<double> sorted_ratios = swap_ratios;
  std::sort(sorted_ratios.begin(), sorted_ratios.end());
  const double median_swap_ratio = sorted_ratios[1];
  // p99 during a learner round vs steady state just before it, same load.
  // The round runs on the daemon's learner thread (learner.threads,
  // learner.nice) on samples stored the way POST /v1/samples stores them,
  // without teacher logits, so the round starts with the teacher pass.
  constexpr int64_t kRoundSamples = 60000;  // the whole training set
  struct RoundResult {
    bool ran = false;
    std::string error;
    WrkResult steady, during;
    storage::RoundRecord record;
    std::string state_at_wrk_end;
    double overlap = 0;  // share of the wrk window the round covered
    // A second window once the round has reached its training phase (the
    // first one falls in the teacher pass).
    bool trained_window = false;
    WrkResult during_training;
    std::string state_at_training_start, state_at_training_end;
  } round;
  {
    auto train = learner::LoadIdxDataset(learner::kDefaultFashionMnistDir, "train", kRoundSamples);
    learner::IncrementalDistiller* distiller = daemon->distiller();
    if (!train.ok()) {
      round.error = "training set: " + train.status().ToString();
    } else if (distiller == nullptr) {
      round.error = "the daemon has no learner";
    } else {
      for (int64_t b = 0; b < train->size() && round.error.empty(); b += 1000) {
        auto samples = learner::DatasetToSamples(*train, b, std::min<int64_t>(b + 1000, train->size()));
        auto appended = daemon->store()->AppendIncoming(samples);
        if (!appended.ok()) round.error = "append: " + appended.status().ToString();
      }
    }
    if (round.error.empty()) {
      // Let RocksDB write out the 60,000 appended samples first: its flush
      // and compaction threads would otherwise inflate the steady p99 that
      // the round is compared with.
      Status flushed = daemon->store()->Flush();
      if (!flushed.ok()) std::cerr << "flush: " << flushed.ToString() << "\n";
      std::this_thread::sleep_for(std::chrono::seconds(3));
      round.steady = RunWrk(env, bin_script, 64, seconds, port);
      auto id = distiller->RequestRound();
      if (!id.ok()) {
        round.error = "round: " + id.status().ToString();
      } else if (id->kind == learner::RoundRequest::Kind::kNothingNew) {
        round.error = "round: " + id->message;
      } else {
        // Measure once the learner thread has picked the round up.
        for (int i = 0; i < 200 && distiller->Progress().state == learner::LearnerState::kIdle; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        round.during = RunWrk(env, bin_script, 64, seconds, port);
        DistillerProgressSummary(distiller->Progress(), &round.state_at_wrk_end);
        // Then the training phase: wait (bounded) until the learner trains,
        // and measure again while it does.
        const auto train_wait = std::chrono::steady_clock::now() + std::chrono::seconds(180);
        while (std::chrono::steady_clock::now() < train_wait && distiller->Progress().state != learner::LearnerState::kTraining &&
               !daemon->registry()->GetRound(id->round_id)->ended_us) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (distiller->Progress().state == learner::LearnerState::kTraining) {
          DistillerProgressSummary(distiller->Progress(), &round.state_at_training_start);
          round.during_training = RunWrk(env, bin_script, 64, seconds, port);
          DistillerProgressSummary(distiller->Progress(), &round.state_at_training_end);
          round.trained_window = true;
          std::cerr << "during training p99 " << round.during_training.p99_ms << " ms ("
                    << round.state_at_training_start << " -> " << round.state_at_training_end << ")\n";
        }
        // Wait (bounded) for the round to end, to report its span.
        const auto wait_end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (std::chrono::steady_clock::now() < wait_end) {
          auto rec = daemon->registry()->GetRound(id->round_id);
          if (rec.ok()) round.record = *rec;
          if (rec.ok() && rec->ended_us) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        round.ran = true;
        const int64_t end = round.record.ended_us.value_or(Clock::Real()->NowMicros());
        const int64_t covered = std::min(end, round.during.end_us) - std::max(round.record.started_us, round.during.start_us);
        round.overlap = std::clamp(static_cast<double>(covered) / (round.during.end_us - round.during.start_us), 0.0, 1.0);
        std::cerr << "round " << id->round_id << ": " << storage::RoundOutcomeName(round.record.outcome) << ", steady p99 " << round.steady.p99_ms
                  << " ms, during p99 " << round.during.p99_ms << " ms, overlap " << round.overlap << "\n";
      }
    }
    if (!round.error.empty()) std::cerr << "learner round not measured: " << round.error << "\n";
  }
  daemon->Shutdown();
  const std::string load_after = LoadAverage();

  // Report.
  const Row* bin64 = nullptr;
  for (const auto& r : rows) {
    if (r.mode == "binary" && r.connections == 64) bin64 = &r;
  }
  std::ostringstream md;
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  md << "## Serving: KServe v2 inference over HTTP (issue #5)\n\n"
     << "Measured by `bench/serving/run.sh` (" << seconds << " s per wrk run) on a "
     << std::thread::hardware_concurrency()
     << "-core machine shared with other builds (1-minute load average " << load_before << " at the start, "
     << load_after
     << " at the end), so absolute figures are noisy; the ratios compare runs made minutes apart in the same "
        "process.\n\n"
     << "Set-up: the shipped default config (" << cfg.server.io_threads
     << " I/O threads, each with its own loop; batching.inference_threads " << cfg.batching.inference_threads
     << ", i.e. forward passes run inline on the loops, each taking the requests one pass over the sockets "
        "delivered; max_batch_size "
     << cfg.batching.max_batch_size << ", 1 intra-op thread) and the default student (MLP 784-64-10, frozen and "
        "optimized for inference). wrk 1 thread on loopback, single-sample requests cycling through 64 "
        "Fashion-MNIST test images, asking for `label`. JSON bodies average "
     << json_bytes / data->size() << " bytes; binary bodies are a " << bin_header.size()
     << "-byte JSON header plus 3136 bytes of FP32 pixels. The daemon runs inside the benchmark process (the "
        "same `Daemon` class as `distilld serve`) so that the benchmark can trigger version swaps.\n\n"
     << "The learner is on (a teacher is configured) but starts rounds only when the benchmark asks.\n\n"
     << "In-process baseline (the served module's `forward`, same run, idle server): batch 1: "
     << Fixed(rate1, 0) << " samples/s (" << Fixed(us1) << " us per call); batch 64: " << Fixed(rate64, 0)
     << " samples/s (" << Fixed(us64) << " us per call).\n\n"
     << "| body | connections | requests/s | p50 ms | p99 ms | errors | vs in-process batch 1 |\n"
     << "|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows) {
    md << "| " << r.mode << " | " << r.connections << " | " << Fixed(r.r.rps, 0) << " | " << Fixed(r.r.p50_ms, 2)
       << " | " << Fixed(r.r.p99_ms, 2) << " | " << r.r.errors + r.r.non2xx << " | " << Fixed(r.r.rps / rate1, 2)
       << "x |\n";
  }
  md << "\nTargets at 64 connections, binary: requests/s >= 50% of the in-process batch-1 rate -> ratio "
     << Fixed(bin64->r.rps / rate1, 2) << " (" << (bin64->r.rps / rate1 >= 0.5 ? "met" : "NOT met")
     << "); p99 < 5 ms -> " << Fixed(bin64->r.p99_ms, 2) << " ms (" << (bin64->r.p99_ms < 5 ? "met" : "NOT met")
     << "). Against in-process batch 64: " << Fixed(bin64->r.rps / rate64, 2) << "x.\n\n";
  md << "Hot swap (binary, 64 connections; 50 swaps paced over " << seconds - 1.5
     << " s of a wrk run, alternating between two saved students; each publish loads, checks, freezes, optimizes "
        "and warms up on a thread at nice +10; three repetitions of a steady run followed by a swap run):\n\n"
     << "| repetition | steady req/s | steady p99 ms | swaps | swaps took s | during req/s | during p99 ms | errors | "
        "ratio |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < swap_runs.size(); ++i) {
    const auto& r = swap_runs[i];
    md << "| " << i + 1 << " | " << Fixed(r.steady.rps, 0) << " | " << Fixed(r.steady.p99_ms, 2) << " | "
       << r.swaps_ok << " | " << Fixed(r.swap_seconds, 1) << " | " << Fixed(r.during.rps, 0) << " | "
       << Fixed(r.during.p99_ms, 2) << " | " << r.during.errors + r.during.non2xx << " | "
       << Fixed(swap_ratios[i], 2) << "x |\n";
  }
  md << "\nMedian ratio " << Fixed(median_swap_ratio, 2) << "x (target <= 1.5x: "
     << (median_swap_ratio <= 1.5 ? "met" : "NOT met") << ").\n\n";
  md << "Where forward passes run (binary; runs alternate between two daemons): inline on the "
     << cfg.server.io_threads << " I/O loops (batching.inference_threads 0, the default) vs the previous default, "
     << tcfg.server.io_threads << " I/O thread plus " << tcfg.batching.inference_threads
     << " inference thread with early dispatch:\n\n"
     << "| connections | inline req/s | inline p50 ms | inline p99 ms | thread req/s | thread p50 ms | thread p99 ms | "
        "inline / thread |\n"
     << "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : mode_rows) {
    md << "| " << r.connections << " | " << Fixed(r.inline_loops.rps, 0) << " | " << Fixed(r.inline_loops.p50_ms, 2)
       << " | " << Fixed(r.inline_loops.p99_ms, 2) << " | " << Fixed(r.threaded.rps, 0) << " | "
       << Fixed(r.threaded.p50_ms, 2) << " | " << Fixed(r.threaded.p99_ms, 2) << " | "
       << Fixed(r.threaded.rps > 0 ? r.inline_loops.rps / r.threaded.rps : 0, 2) << "x |\n";
  }
  md << "\n";
  md << "Learner round (binary, 64 connections; learner.threads " << cfg.learner.threads << ", learner.nice "
     << cfg.learner.nice << ", learner.idle_priority " << (cfg.learner.idle_priority ? "true" : "false")
     << ", learner.yield_above_rps " << cfg.learner.yield_above_rps << ", learner.max_yield_s "
     << cfg.learner.max_yield_s << ", the defaults: the learner pauses before each step while inference "
        "answers more requests per second than that, for at most max_yield_s per round; " << kRoundSamples
     << " stored Fashion-MNIST training samples without teacher logits, so the round starts with the teacher pass; "
     << "learner.epochs " << cfg.learner.epochs << " instead of 2 so that training outlasts a wrk run; "
     << (untrained_teacher ? "teacher: an untrained network of the default teacher architecture (CNN 16-32 "
                             "channels, 128 hidden), which costs the same as a trained one"
                           : "teacher: " + teacher_path)
     << "): ";
  if (!round.ran) {
    md << "NOT measured (" << round.error << ").\n\n";
  } else {
    const double ratio = round.during.p99_ms / round.steady.p99_ms;
    const auto& rec = round.record;
    md << "steady p99 " << Fixed(round.steady.p99_ms, 2) << " ms (" << Fixed(round.steady.rps, 0)
       << " req/s) just before; during the round p99 " << Fixed(round.during.p99_ms, 2) << " ms ("
       << Fixed(round.during.rps, 0) << " req/s, " << round.during.errors + round.during.non2xx
       << " errors). Ratio " << Fixed(ratio, 2) << "x (target <= 1.5x: " << (ratio <= 1.5 ? "met" : "NOT met")
       << "). The round (id " << rec.id << ", " << rec.samples_new << " new samples, outcome " << storage::RoundOutcomeName(rec.outcome)
       << ") ran from " << Fixed((rec.started_us - round.during.start_us) / 1e6, 2) << " s to "
       << (rec.ended_us ? Fixed((*rec.ended_us - round.during.start_us) / 1e6, 2) + " s"
                        : std::string("beyond the 60 s wait (the daemon then stops it)"))
       << " relative to the start of the wrk run (which lasted "
       << Fixed((round.during.end_us - round.during.start_us) / 1e6, 2) << " s): it covered "
       << Fixed(100 * round.overlap, 0) << "% of the wrk window (learner state when wrk ended: "
       << round.state_at_wrk_end << ").\n\n";
    if (round.trained_window) {
      const double tratio = round.during_training.p99_ms / round.steady.p99_ms;
      md << "During the same round's training phase (a second wrk run started once the learner reported "
            "`training`): p99 "
         << Fixed(round.during_training.p99_ms, 2) << " ms (" << Fixed(round.during_training.rps, 0) << " req/s, "
         << round.during_training.errors + round.during_training.non2xx << " errors). Ratio to the steady p99 "
         << Fixed(tratio, 2) << "x (target <= 1.5x: " << (tratio <= 1.5 ? "met" : "NOT met")
         << "). Learner when that wrk run started: " << round.state_at_training_start << "; when it ended: "
         << round.state_at_training_end;
      if (rec.ended_us) {
        const int64_t covered = std::min(*rec.ended_us, round.during_training.end_us) - round.during_training.start_us;
        md << "; the round ended " << Fixed((*rec.ended_us - round.during_training.start_us) / 1e6, 2)
           << " s after that wrk run started, so training covered "
           << Fixed(100 * std::clamp(static_cast<double>(covered) /
                                         (round.during_training.end_us - round.during_training.start_us),
                                     0.0, 1.0),
                    0)
           << "% of its window";
      }
      md << ".\n\n";
    } else {
      md << "The training phase was NOT measured: the learner did not reach it within 180 s.\n\n";
    }
  }

  md << "int8 vs float student, served (issue #9; binary requests, the same wrk set-up; a second daemon with "
        "`model.precision: int8`, same initial weights, learner off; the float and int8 runs alternate at each "
        "connection count). In-process batch 1: float "
     << Fixed(rate1, 0) << " samples/s, int8 " << Fixed(int8_rate1, 0) << " samples/s (" << Fixed(int8_us1)
     << " us per call), int8/float " << Fixed(int8_rate1 / rate1, 2) << "x.\n\n"
     << "| connections | float req/s | float p99 ms | int8 req/s | int8 p99 ms | int8 / float |\n"
     << "|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : precision_rows) {
    md << "| " << r.connections << " | " << Fixed(r.f.rps, 0) << " | " << Fixed(r.f.p99_ms, 2) << " | "
       << Fixed(r.q.rps, 0) << " | " << Fixed(r.q.p99_ms, 2) << " | " << Fixed(r.q.rps / r.f.rps, 2) << "x |\n";
  }
  md << "\n";
  std::ofstream(out_path) << md.str();
  std::cout << md.str();
  return 0;
}
