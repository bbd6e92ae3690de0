// Online-learning benchmarks, in one run:
//  1. durable ingest through POST /v1/samples, driven by wrk on loopback:
//     JSON and binary bodies of 1, 32 and 256 Fashion-MNIST samples, alone
//     and with concurrent inference load; reference: direct
//     SampleStore::AppendIncoming of the same batches in the same run;
//  2. time to adapt: from the last acknowledged sample of a 12,000-sample
//     phase (two new classes) to a promoted version serving.
// Writes a Markdown section. Usage:
//   learning_bench <bench dir> <output.md> [seconds per wrk run]
#include <torch/torch.h>

#include <unistd.h>

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
#include "daemon/demo/http_client.h"
#include "daemon/demo/kserve_client.h"
#include "learner/idx_dataset.h"
#include "learner/offline.h"
#include "storage/sample_store.h"
#include "common/log.h"

namespace fs = std::filesystem;
using namespace distilld;
using Clk = std::chrono::steady_clock;

namespace {

struct WrkResult {
  double requests = 0, seconds = 0, p50_ms = 0, p99_ms = 0;
  int64_t errors = 0, non2xx = 0;
  bool ok = false;
};

WrkResult RunWrk(const std::string& env, const std::string& script, const std::string& url, int conns, int secs) {
  std::string cmd = env + " wrk -t1 -c" + std::to_string(conns) + " -d" + std::to_string(secs) + "s -s " + script +
                    " " + url + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  WrkResult r;
  if (p == nullptr) return r;
  char line[4096];
  while (std::fgets(line, sizeof line, p) != nullptr) {
    long long req, dur, p50, p99, err, non;
    if (std::sscanf(line, "RESULT requests=%lld duration_us=%lld p50_us=%lld p99_us=%lld errors=%lld non2xx=%lld",
                    &req, &dur, &p50, &p99, &err, &non) == 6) {
      r = {static_cast<double>(req), dur / 1e6, p50 / 1e3, p99 / 1e3, err, non, true};
    }
  }
  ::pclose(p);
  return r;
}

std::string JsonBody(const float* x, const int64_t* y, int64_t n) {
  std::ostringstream os;
  os << R"({"inputs":[{"name":"input","datatype":"FP32","shape":[)" << n << R"(,1,28,28],"data":[)";
  os << std::setprecision(6);
  for (int64_t i = 0; i < n * 784; ++i) os << (i ? "," : "") << x[i];
  os << R"(]},{"name":"label","datatype":"INT64","shape":[)" << n << R"(],"data":[)";
  for (int64_t i = 0; i < n; ++i) os << (i ? "," : "") << y[i];
  os << "]}]}";
  return os.str();
}

std::string ReadFirstLine(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (key.empty() || line.rfind(key, 0) == 0) return line;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: learning_bench <bench dir> <output.md> [seconds]\n";
    return 2;
  }
  const std::string bench_dir = argv[1];
  const std::string out_path = argv[2];
  const int secs = argc > 3 ? std::atoi(argv[3]) : 8;
  log::SetLevel(log::Level::kWarning);
  at::set_num_threads(1);
  const fs::path tmp = fs::temp_directory_path() / ("distilld-learning-bench-" + std::to_string(::getpid()));
  fs::create_directories(tmp);

  auto train = learner::LoadIdxDataset(learner::kDefaultFashionMnistDir, "train");
  if (!train.ok()) {
    std::cerr << train.status().ToString() << "\n";
    return 1;
  }
  const torch::Tensor images = train->images.contiguous();
  const torch::Tensor labels = train->labels.contiguous();
  const float* px = images.data_ptr<float>();
  const int64_t* lb = labels.data_ptr<int64_t>();

  std::string teacher_path = std::getenv("DISTILLD_TEACHER") ? std::getenv("DISTILLD_TEACHER") : "";
  if (teacher_path.empty()) {
    teacher_path = (tmp / "teacher.pt").string();
    learner::TrainTeacherOptions t;
    t.output_path = teacher_path;
    t.epochs = 1;
    t.train_limit = 12000;
    t.threads = 1;
    std::cerr << "training a quick teacher (12,000 images, 1 epoch)...\n";
    auto r = learner::TrainTeacher(t);
    if (!r.ok()) {
      std::cerr << r.status().ToString() << "\n";
      return 1;
    }
  }

  // Reference: the same durable appends without HTTP.
  auto ref_rate = [&](int64_t batch) {
    storage::SampleStoreOptions so;
    so.path = (tmp / ("ref-" + std::to_string(batch))).string();
    auto store = storage::SampleStore::Open(so);
    std::vector<storage::Sample> samples = learner::DatasetToSamples(*train, 0, batch);
    int64_t n = 0;
    auto t0 = Clk::now();
    while (Clk::now() - t0 < std::chrono::seconds(secs)) {
      if (!(*store)->AppendIncoming(samples).ok()) return 0.0;
      n += batch;
    }
    return n / std::chrono::duration<double>(Clk::now() - t0).count();
  };

  config::Config c;
  c.server.listen = "127.0.0.1:0";
  c.server.max_body_bytes = 64u << 20;
  c.storage.state_dir = (tmp / "state").string();
  c.model.teacher = teacher_path;
  c.learner.trigger_count = 1'000'000'000;
  c.learner.trigger_interval_s = 30 * 86400;
  auto daemon = daemon::Daemon::Create(c);
  Status st = daemon->Start();
  if (!st.ok() || daemon->distiller() == nullptr) {
    std::cerr << "daemon: " << st.ToString() << "\n";
    return 1;
  }
  const std::string base = "http://127.0.0.1:" + std::to_string(daemon->tcp_port());

  // An inference body for the concurrent load (the serving benchmark's script).
  fs::create_directories(tmp / "infer");
  daemon::EncodedRequest infer = daemon::EncodeInferRequest("input", px, 1, {1, 28, 28}, "");
  std::ofstream(tmp / "infer" / "bin_0.dat", std::ios::binary) << infer.body;
  const std::string infer_env = "BODY_DIR=" + (tmp / "infer").string() + " BODY_COUNT=1 HEADER_LENGTH=" +
                                infer.headers[1].second;

  std::ostringstream md;
  md << std::fixed;
  md << "## Online learning: ingest over HTTP and time to adapt (issue #6)\n\n";
  md << "Measured by `bench/learning/run.sh` (" << secs << " s per wrk run) on `nproc` = "
     << std::thread::hardware_concurrency() << ", " << ReadFirstLine("/proc/cpuinfo", "model name").substr(13)
     << "; load average at start: " << ReadFirstLine("/proc/loadavg", "") << ". The daemon runs in the benchmark "
     << "process (the same `Daemon` as `distilld serve`, default config: 1 I/O thread, fsync before every "
     << "acknowledgement); wrk 1 thread, 8 connections, on loopback, every request a batch of Fashion-MNIST "
     << "training images with labels. Reference: `SampleStore::AppendIncoming` of the same batches called "
     << "directly in the same run (one writer).\n\n";
  md << "| body | batch | load | requests/s | samples/s | p50 ms | p99 ms | errors | vs direct append |\n";
  md << "|---|---:|---|---:|---:|---:|---:|---:|---:|\n";
  double binary256 = 0, direct256 = 0;
  for (int64_t batch : {1, 32, 256}) {
    const double direct = ref_rate(batch);
    if (batch == 256) direct256 = direct;
    for (const std::string fmt : {"json", "binary"}) {
      const fs::path body = tmp / ("body-" + fmt + "-" + std::to_string(batch));
      std::string env;
      if (fmt == "json") {
        std::ofstream(body, std::ios::binary) << JsonBody(px, lb, batch);
        env = "CONTENT_TYPE=application/json";
      } else {
        daemon::EncodedRequest r = daemon::EncodeSamplesRequest(px, lb, batch, {1, 28, 28});
        std::ofstream(body, std::ios::binary) << r.body;
        env = "CONTENT_TYPE=application/octet-stream HEADER_LENGTH=" + r.headers[1].second;
      }
      env += " BODY_FILE=" + body.string();
      for (bool loaded : {false, true}) {
        std::thread load;
        WrkResult infer_result;
        if (loaded) {
          load = std::thread([&] {
            infer_result = RunWrk(infer_env, bench_dir + "/serving/infer_binary.lua", base, 16, secs + 2);
          });
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
        }
        WrkResult w = RunWrk(env, bench_dir + "/learning/samples.lua", base, 8, secs);
        if (load.joinable()) load.join();
        const double rps = w.ok ? w.requests / w.seconds : 0;
        if (fmt == "binary" && batch == 256 && !loaded) binary256 = rps * batch;
        md << "| " << fmt << " | " << batch << " | "
           << (loaded ? "+ inference (" + std::to_string(static_cast<int>(infer_result.ok ? infer_result.requests / infer_result.seconds : 0)) + " req/s)" : "alone")
           << " | " << std::setprecision(0) << rps << " | " << rps * batch << " | " << std::setprecision(2)
           << w.p50_ms << " | " << w.p99_ms << " | " << w.errors + w.non2xx << " | " << std::setprecision(2)
           << (direct > 0 ? rps * batch / direct : 0) << "x |\n";
        std::cerr << fmt << " batch " << batch << (loaded ? " loaded" : "") << ": " << rps * batch << " samples/s\n";
      }
    }
    md << "| direct append | " << batch << " | alone | | " << std::setprecision(0) << direct << " | | | | 1.00x |\n";
  }
  md << "\nTarget: at least 20,000 samples/s over HTTP at batch 256 with binary bodies -> " << std::setprecision(0)
     << binary256 << " samples/s (" << (binary256 >= 20000 ? "met" : "NOT met") << "; direct appends in the same run: "
     << direct256 << " samples/s). Eight connections can beat the one direct writer: concurrent requests share "
     << "WAL fsyncs (RocksDB's write group), which a single writer cannot.\n\n";

  // Time to adapt.
  auto client = daemon::HttpClient::Create("127.0.0.1", daemon->tcp_port());
  auto post_phase = [&](std::vector<int64_t> classes) -> bool {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < labels.size(0) && idx.size() < 12000; ++i) {
      if (std::find(classes.begin(), classes.end(), lb[i]) != classes.end()) idx.push_back(i);
    }
    std::vector<float> x;
    std::vector<int64_t> y;
    for (size_t b = 0; b < idx.size(); b += 256) {
      x.clear();
      y.clear();
      for (size_t i = b; i < std::min(idx.size(), b + 256); ++i) {
        x.insert(x.end(), px + idx[i] * 784, px + idx[i] * 784 + 784);
        y.push_back(lb[idx[i]]);
      }
      daemon::EncodedRequest r = daemon::EncodeSamplesRequest(x.data(), y.data(), y.size(), {1, 28, 28});
      auto res = client->Post("/v1/samples", std::move(r.body), r.headers);
      if (!res.ok() || res->status != 200) return false;
    }
    return true;
  };
  // Drop the ingest benchmark's samples, then learn a first phase (0, 1).
  std::vector<storage::Mutation> drop;
  auto ingested = daemon->store()->ReadIncoming(0, 10'000'000);
  if (!ingested.ok()) return 1;
  for (const auto& s : *ingested) {
    drop.push_back({storage::Family::kIncoming, storage::SampleStore::IncomingKey(s.id), std::nullopt});
  }
  (void)daemon->store()->Apply(drop);
  config::LearnerConfig triggers = daemon->config().learner;
  triggers.trigger_count = 12000;
  triggers.trigger_interval_s = 30 * 86400;
  triggers.min_samples = 32;
  if (Status s = daemon->distiller()->Reconfigure(triggers, daemon->config().replay); !s.ok()) return 1;
  auto wait_round = [&](int64_t before) {
    for (int i = 0; i < 6000 && daemon->distiller()->Progress().rounds_completed <= before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  int64_t rounds = daemon->distiller()->Progress().rounds_completed;
  post_phase({0, 1});
  wait_round(rounds);
  md << "Time to adapt: the learner's count trigger set to 12,000 samples; a first phase (classes 0 and 1, 12,000 "
        "images) is learned, then a second phase (classes 2 and 3) is posted in binary batches of 256; the clock "
        "runs from the last batch's acknowledgement until the served version changes.\n\n";
  md << "| run | outcome | seconds from last ack to serving | round samples |\n|---|---|---:|---:|\n";
  for (int run = 0; run < 2; ++run) {
    const std::vector<int64_t> phase = run == 0 ? std::vector<int64_t>{2, 3} : std::vector<int64_t>{4, 5};
    rounds = daemon->distiller()->Progress().rounds_completed;
    const int64_t v0 = daemon->models()->Active()->version();
    if (!post_phase(phase)) {
      std::cerr << "posting the phase failed\n";
      return 1;
    }
    const auto t0 = Clk::now();
    double seconds = -1;
    for (int i = 0; i < 60000; ++i) {
      if (daemon->models()->Active()->version() != v0) {
        seconds = std::chrono::duration<double>(Clk::now() - t0).count();
        break;
      }
      if (daemon->distiller()->Progress().rounds_completed > rounds) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    wait_round(rounds);
    learner::DistillerProgress p = daemon->distiller()->Progress();
    auto rec = daemon->registry()->ListRounds(1);
    md << "| classes " << phase[0] << "," << phase[1] << " | " << (p.last_outcome ? storage::RoundOutcomeName(*p.last_outcome) : "-") << " | " << std::setprecision(2)
       << seconds << " | " << (rec.ok() && !rec->empty() ? (*rec)[0].samples_new + (*rec)[0].samples_replay : 0)
       << " |\n";
    std::cerr << "adapt: " << seconds << " s (" << (p.last_outcome ? storage::RoundOutcomeName(*p.last_outcome) : "-") << ")\n";
  }
  md << "\nTarget: under 10 s (a negative time means the round did not promote).\n";
  daemon->Shutdown();
  std::ofstream(out_path) << md.str();
  std::cout << md.str();
  std::error_code ec;
  fs::remove_all(tmp, ec);
  return 0;
}
