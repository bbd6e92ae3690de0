// serving_bench: HTTP inference throughput and latency with wrk, against an
// in-process baseline measured in the same run, and p99 during hot swaps.
//
// It hosts the same Daemon that `distilld serve` runs (in this process, so it
// can trigger 50 version swaps while wrk runs: the rollback endpoint that
// would let an outside process do so is the next issue), writes single-sample
// Fashion-MNIST request bodies (JSON and binary), runs wrk with
// infer_json.lua / infer_binary.lua at 1, 16 and 64 connections on loopback,
// and writes a Markdown report.
//
//   serving_bench <scripts dir> <output.md> [seconds per run]
#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "daemon/daemon.h"
#include "learner/idx_dataset.h"
#include "learner/model_builder.h"
#include "learner/model_io.h"
#include "tests/support/temp_dir.h"
// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"

namespace fs = std::filesystem;
using namespace distilld;

namespace {

struct WrkResult {
  bool ok = false;
  double rps = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  long requests = 0;
  long errors = 0;
  long non2xx = 0;
  std::string raw;
};

long Field(const std::string& line, const std::string& key) {
  size_t p = line.find(key + "=");
  if (p == std::string::npos) return -1;
  return std::stol(line.substr(p + key.size() + 1));
}

WrkResult RunWrk(const std::string& env, const std::string& script, int connections, int seconds, uint16_t port) {
  std::ostringstream cmd;
  cmd << env << " wrk -t1 -c" << connections << " -d" << seconds << "s --timeout 5s -s " << script
      << " http://127.0.0.1:" << port << "/v2/models/fashion/infer 2>&1";
  WrkResult r;
  FILE* p = ::popen(cmd.str().c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.raw.append(buf, n);
  ::pclose(p);
  size_t at = r.raw.find("RESULT ");
  if (at == std::string::npos) return r;
  std::string line = r.raw.substr(at, r.raw.find('\n', at) - at);
  r.requests = Field(line, "requests");
  long duration_us = Field(line, "duration_us");
  r.p50_ms = Field(line, "p50_us") / 1000.0;
  r.p99_ms = Field(line, "p99_us") / 1000.0;
  r.errors = Field(line, "errors");
  r.non2xx = Field(line, "non2xx");
  r.rps = duration_us > 0 ? r.requests * 1e6 / duration_us : 0;
  r.ok = true;
  return r;
}

// Samples per second of the served module's forward pass, called directly.
double ForwardRate(const daemon::ServedModel& model, int64_t batch, double seconds, double* per_call_us) {
  at::Tensor x = torch::rand({batch, 1, 28, 28});
  for (int i = 0; i < 50; ++i) (void)model.Forward(x);
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  int64_t calls = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < 20; ++i) (void)model.Forward(x);
    calls += 20;
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *per_call_us = elapsed / calls * 1e6;
  return calls * batch / elapsed;
}

// The 1-minute load average: the machine is shared, so the report says how busy it was.
std::string LoadAverage() {
  std::ifstream f("/proc/loadavg");
  std::string one;
  f >> one;
  return one.empty() ? "?" : one;
}

std::string Fixed(double v, int digits = 1) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

void AppendFloat(std::string* out, float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, r.ptr);
}

}  // namespace

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
  config::Config cfg;  // defaults, as shipped
  cfg.server.listen = "127.0.0.1:0";
  cfg.storage.state_dir = dir.str("state");
  cfg.storage.sync = false;
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

  // p99 during 50 hot swaps vs steady state, same load (binary, 64 connections).
  learner::ArchSpec spec;
  spec.hidden = cfg.model.architecture.hidden;
  std::vector<storage::VersionRecord> records;
  for (uint64_t seed : {1001u, 1002u}) {
    auto m = learner::BuildModel(spec, seed);
    std::string rel = "models/bench-" + std::to_string(seed) + ".pt";
    auto saved = learner::SaveModelAtomic(*m, (fs::path(cfg.storage.state_dir) / rel).string());
    if (!saved.ok()) {
      std::cerr << saved.status().ToString() << "\n";
      return 1;
    }
    storage::VersionRecord r;
    r.path = rel;
    r.sha256 = saved->sha256;
    records.push_back(r);
  }
  const std::string bin_script = scripts + "/infer_binary.lua";
  WrkResult steady = RunWrk(env, bin_script, 64, seconds, port);
  WrkResult during;
  std::thread load([&] { during = RunWrk(env, bin_script, 64, seconds, port); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto swap_window = std::chrono::duration<double>(seconds - 1.5);
  const auto swap_start = std::chrono::steady_clock::now();
  int swaps_ok = 0;
  for (int i = 0; i < 50; ++i) {
    storage::VersionRecord r = records[i % 2];
    r.id = 100 + i;
    if (daemon->models()->Publish(r).ok()) ++swaps_ok;
    std::this_thread::sleep_until(swap_start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                   swap_window * ((i + 1) / 50.0)));
  }
  load.join();
  std::cerr << "steady p99 " << steady.p99_ms << " ms, during swaps p99 " << during.p99_ms << " ms, swaps "
            << swaps_ok << "\n";
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
     << "Set-up: the shipped default config (1 I/O thread, 1 inference thread with 1 intra-op thread, "
        "max_batch_size 64, max_queue_delay_us 500) and the default student (MLP 784-64-10, frozen and "
        "optimized for inference). wrk 1 thread on loopback, single-sample requests cycling through 64 "
        "Fashion-MNIST test images, asking for `label`. JSON bodies average "
     << json_bytes / data->size() << " bytes; binary bodies are a " << bin_header.size()
     << "-byte JSON header plus 3136 bytes of FP32 pixels. The daemon runs inside the benchmark process (the "
        "same `Daemon` class as `distilld serve`) so that the benchmark can trigger version swaps.\n\n"
     << "At 1 connection every request waits out max_queue_delay_us (500 us) for company that never comes: "
        "that delay, not the HTTP path, sets the 1-connection latency and rate; lower it for latency-bound "
        "single clients.\n\n"
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
     << "). Against in-process batch 64: " << Fixed(bin64->r.rps / rate64, 2) << "x.\n\n"
     << "Hot swap (binary, 64 connections): steady p99 " << Fixed(steady.p99_ms, 2) << " ms ("
     << Fixed(steady.rps, 0) << " req/s); during " << swaps_ok << " swaps in " << seconds - 1.5 << " s, p99 "
     << Fixed(during.p99_ms, 2) << " ms (" << Fixed(during.rps, 0) << " req/s, "
     << during.errors + during.non2xx << " errors). Ratio " << Fixed(during.p99_ms / steady.p99_ms, 2)
     << "x (target <= 1.5x: " << (during.p99_ms / steady.p99_ms <= 1.5 ? "met" : "NOT met") << ").\n\n"
     << "Not measured yet: p99 during a learner round (the learner thread is plugged into the daemon next "
        "session).\n";
  std::ofstream(out_path) << md.str();
  std::cout << md.str();
  return 0;
}
