// bench_storage: durable ingest, replay sampling and memory of storage/ and
// replaybuffer/, each figure printed next to a reference measured in the same
// run (the machine is shared and noisy).
//
//   bench_storage [--dir DIR] [--seconds S] [--images N]
//
// Samples are Fashion-MNIST-sized: 784 float32 pixels ([1, 28, 28], from the
// real training set when /usr/share/datasets/fashion-mnist is present), a
// label and 10 teacher logits (synthetic: no teacher runs here).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "replaybuffer/replay_buffer.h"
#include "storage/sample_store.h"

namespace {

using namespace distilld;
using Steady = std::chrono::steady_clock;

double Seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

struct Latencies {
  std::vector<double> us;
  double Percentile(double p) {
    if (us.empty()) return 0;
    std::sort(us.begin(), us.end());
    size_t i = std::min(us.size() - 1, static_cast<size_t>(p / 100.0 * us.size()));
    return us[i];
  }
};

long VmRssKb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

std::string GzRead(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return {};
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return out;
}

// Fashion-MNIST training images as samples, or synthetic ones of equal size.
std::vector<storage::Sample> LoadSamples(size_t n, bool* real) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  std::string images = GzRead(dir + "train-images-idx3-ubyte.gz");
  std::string labels = GzRead(dir + "train-labels-idx1-ubyte.gz");
  *real = images.size() >= 16 + n * 784 && labels.size() >= 8 + n;
  std::mt19937_64 rng(1);
  std::vector<storage::Sample> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    storage::Sample s;
    s.dtype = storage::DType::kFloat32;
    s.shape = {1, 28, 28};
    std::vector<float> px(784);
    for (size_t k = 0; k < 784; ++k) {
      px[k] = *real ? static_cast<uint8_t>(images[16 + i * 784 + k]) / 255.0f
                    : static_cast<float>(rng() % 256) / 255.0f;
    }
    s.data.assign(reinterpret_cast<const char*>(px.data()), px.size() * 4);
    s.label = *real ? static_cast<uint8_t>(labels[8 + i]) : static_cast<int64_t>(i % 10);
    s.teacher_logits.resize(10);
    for (size_t k = 0; k < 10; ++k) {
      s.teacher_logits[k] = (static_cast<int64_t>(k) == *s.label ? 4.0f : 0.0f) +
                            static_cast<float>(rng() % 1000) / 1000.0f;
    }
    s.source = storage::SampleSource::kIngest;
    s.ingest_time_us = 1'764'000'000'000'000 + static_cast<int64_t>(i);
    out.push_back(std::move(s));
  }
  return out;
}

std::unique_ptr<storage::SampleStore> OpenStore(const std::string& path, bool sync) {
  storage::SampleStoreOptions o;
  o.path = path;
  o.sync = sync;
  auto r = storage::SampleStore::Open(o);
  if (!r.ok()) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), r.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

// Raw disk reference: appends of `bytes`, each followed by fdatasync. No
// synced writer on this disk can acknowledge more often than this.
double FsyncRate(const std::string& dir, size_t bytes, double seconds, double* p99_us) {
  std::string path = dir + "/fsync-probe";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return 0;
  std::string block(bytes, 'x');
  Latencies lat;
  auto start = Steady::now();
  size_t n = 0;
  while (Seconds(Steady::now() - start) < seconds) {
    auto t0 = Steady::now();
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(bytes) ||
        ::fdatasync(fd) != 0) {
      break;
    }
    lat.us.push_back(Seconds(Steady::now() - t0) * 1e6);
    ++n;
  }
  double rate = n / Seconds(Steady::now() - start);
  ::close(fd);
  ::unlink(path.c_str());
  *p99_us = lat.Percentile(99);
  return rate;
}

// CPU seconds used by the whole process (all threads, including RocksDB's
// flush threads). Unlike wall time, it barely moves when other processes
// compete for the cores.
double ProcessCpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct IngestResult {
  double cpu_us_per_sample = 0;
  double writes_per_sync = 0;  // acknowledged batches per WAL fsync (group commit)
  double samples_per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
  size_t batches = 0;
};

// `threads` writers, each appending batches of `batch` for `seconds`.
IngestResult Ingest(const std::string& path, bool sync, size_t batch, int threads,
                    const std::vector<storage::Sample>& samples, double seconds) {
  std::filesystem::remove_all(path);
  auto store = OpenStore(path, sync);
  std::vector<Latencies> lat(threads);
  std::atomic<size_t> total{0};
  double cpu0 = ProcessCpuSeconds();
  auto start = Steady::now();
  std::vector<std::thread> ws;
  for (int t = 0; t < threads; ++t) {
    ws.emplace_back([&, t] {
      // Batches are views into the loaded samples: the client's own copying
      // is not part of the store's cost.
      size_t offset = static_cast<size_t>(t) * 997 % (samples.size() - batch);
      while (Seconds(Steady::now() - start) < seconds) {
        std::span<const storage::Sample> b(samples.data() + offset, batch);
        offset = (offset + batch) % (samples.size() - batch);
        auto t0 = Steady::now();
        auto r = store->AppendIncoming(b);
        lat[t].us.push_back(Seconds(Steady::now() - t0) * 1e6);
        if (!r.ok()) {
          std::fprintf(stderr, "append: %s\n", r.status().ToString().c_str());
          std::exit(1);
        }
        total += batch;
      }
    });
  }
  for (auto& w : ws) w.join();
  double elapsed = Seconds(Steady::now() - start);
  double cpu = ProcessCpuSeconds() - cpu0;
  Latencies all;
  for (auto& l : lat) all.us.insert(all.us.end(), l.us.begin(), l.us.end());
  IngestResult r;
  r.batches = all.us.size();
  r.samples_per_s = total / elapsed;
  r.cpu_us_per_sample = cpu * 1e6 / total;
  auto sc = store->sync_counters();
  r.writes_per_sync = sc.wal_syncs ? static_cast<double>(sc.synced_writes) / sc.wal_syncs : 0;
  r.p50_us = all.Percentile(50);
  r.p99_us = all.Percentile(99);
  store.reset();
  std::filesystem::remove_all(path);
  return r;
}

// Child mode: open an existing store and buffer and report resident memory.
int RssChild(const std::string& path) {
  long before = VmRssKb();
  auto store = OpenStore(path, true);
  replaybuffer::ReplayBufferOptions bo;
  bo.capacity = 5000;
  auto buffer = replaybuffer::ReplayBuffer::Open(store.get(), bo);
  if (!buffer.ok()) return 1;
  long after = VmRssKb();
  std::printf("%ld %ld %llu %llu %llu\n", before, after,
              static_cast<unsigned long long>((*buffer)->Stats().size),
              static_cast<unsigned long long>((*buffer)->Stats().bytes),
              static_cast<unsigned long long>(store->ApproximateMemoryBytes()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double seconds = 3.0;
  size_t images = 6000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rss-child" && i + 1 < argc) return RssChild(argv[++i]);
    if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--images" && i + 1 < argc) {
      images = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [--dir DIR] [--seconds S] [--images N]\n", argv[0]);
      return 2;
    }
  }
  bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/var/tmp/bench_storage-XXXXXX";
    if (!::mkdtemp(tmpl)) return 1;
    dir = tmpl;
  }
  images = std::max<size_t>(images, 5000);
  bool real = false;
  auto samples = LoadSamples(images, &real);
  size_t encoded = storage::EncodeSample(samples[0])->size();
  std::printf("bench_storage: dir %s, %zu %s samples, %zu bytes encoded each, %.1f s per case\n",
              dir.c_str(), samples.size(), real ? "Fashion-MNIST" : "synthetic", encoded, seconds);
  double load[3] = {0, 0, 0};
  if (::getloadavg(load, 3) < 0) load[0] = -1;
  std::printf("machine: %u hardware threads, load average %.2f at start\n\n",
              std::thread::hardware_concurrency(), load[0]);

  double fsync_p99 = 0;
  double fsyncs = FsyncRate(dir, 4096, seconds, &fsync_p99);
  std::printf("reference: raw 4 KiB write+fdatasync: %.0f /s, p99 %.0f us\n\n", fsyncs, fsync_p99);

  std::printf("durable ingest (AppendIncoming, one thread, sync on; references: the same writes\n"
              "with sync off, and raw write+fdatasync of the batch's encoded bytes = the ceiling\n"
              "for one synced writer on this disk)\n");
  std::printf("%-6s %10s %8s %8s %7s | %10s %6s | %12s %6s %11s\n", "batch", "samples/s",
              "p50 us", "p99 us", "cpu us", "nosync/s", "ratio", "raw ceiling", "ratio",
              "raw p99 us");
  IngestResult b32_sync;
  for (size_t batch : {size_t{1}, size_t{32}, size_t{256}}) {
    IngestResult s = Ingest(dir + "/ingest", true, batch, 1, samples, seconds);
    IngestResult n = Ingest(dir + "/ingest", false, batch, 1, samples, seconds);
    double raw_p99 = 0;
    double ceiling = FsyncRate(dir, batch * encoded, seconds / 2, &raw_p99) * batch;
    if (batch == 32) b32_sync = s;
    std::printf("%-6zu %10.0f %8.0f %8.0f %7.1f | %10.0f %6.2f | %12.0f %6.2f %11.0f\n", batch,
                s.samples_per_s, s.p50_us, s.p99_us, s.cpu_us_per_sample, n.samples_per_s,
                s.samples_per_s / n.samples_per_s, ceiling, s.samples_per_s / ceiling, raw_p99);
  }

  std::printf("\ngroup commit: 4 threads, batch 32, sync on\n");
  IngestResult c = Ingest(dir + "/ingest", true, 32, 4, samples, seconds);
  std::printf("  4 threads: %.0f samples/s (%.0f batches/s), p50 %.0f us, p99 %.0f us, "
              "cpu %.1f us/sample, %.2f batches per WAL fsync\n",
              c.samples_per_s, c.samples_per_s / 32, c.p50_us, c.p99_us, c.cpu_us_per_sample,
              c.writes_per_sync);
  std::printf("  1 thread : %.0f samples/s (%.0f batches/s), p50 %.0f us, p99 %.0f us, "
              "%.2f batches per WAL fsync\n",
              b32_sync.samples_per_s, b32_sync.samples_per_s / 32, b32_sync.p50_us,
              b32_sync.p99_us, b32_sync.writes_per_sync);
  std::printf("  ratio 4 threads / 1 thread: %.2f\n", c.samples_per_s / b32_sync.samples_per_s);

  std::printf("\nconcurrent writers at batch 256, sync on\n");
  for (int threads : {2, 4}) {
    IngestResult r = Ingest(dir + "/ingest", true, 256, threads, samples, seconds);
    std::printf("  %d threads: %.0f samples/s, p50 %.0f us, p99 %.0f us, cpu %.1f us/sample, "
                "%.2f batches per WAL fsync\n",
                threads, r.samples_per_s, r.p50_us, r.p99_us, r.cpu_us_per_sample,
                r.writes_per_sync);
  }

  // Replay buffer of 5000 Fashion-MNIST samples.
  const std::string rb_path = dir + "/replay";
  std::filesystem::remove_all(rb_path);
  {
    auto store = OpenStore(rb_path, true);
    replaybuffer::ReplayBufferOptions bo;
    bo.capacity = 5000;  // default policy: class-balanced
    auto buffer = replaybuffer::ReplayBuffer::Open(store.get(), bo);
    if (!buffer.ok()) return 1;
    std::mt19937_64 rng(42);
    Latencies offer;
    for (size_t i = 0; i < samples.size(); i += 256) {
      size_t n = std::min<size_t>(256, samples.size() - i);
      auto t0 = Steady::now();
      Status st = (*buffer)->Offer(std::span(samples).subspan(i, n), rng);
      offer.us.push_back(Seconds(Steady::now() - t0) * 1e6);
      if (!st.ok()) return 1;
    }
    auto stats = (*buffer)->Stats();
    std::printf("\nreplay buffer: %llu samples, %.1f MiB encoded, after %llu offered\n",
                static_cast<unsigned long long>(stats.size), stats.bytes / 1048576.0,
                static_cast<unsigned long long>(stats.seen));
    std::printf("  Offer(256) durable: p50 %.0f us, p99 %.0f us\n", offer.Percentile(50),
                offer.Percentile(99));
    Latencies sample_lat, copy_lat;
    size_t sink = 0;
    for (int k = 0; k < 2000; ++k) {
      auto t0 = Steady::now();
      auto got = (*buffer)->Sample(256, rng);
      sample_lat.us.push_back(Seconds(Steady::now() - t0) * 1e6);
      sink += got->size();
      // Reference: copying 256 samples out of a plain vector, the floor for
      // any Sample() that returns owned copies.
      t0 = Steady::now();
      std::vector<storage::Sample> copy;
      copy.reserve(256);
      for (int j = 0; j < 256; ++j) copy.push_back(samples[(k * 256 + j * 7) % 5000]);
      copy_lat.us.push_back(Seconds(Steady::now() - t0) * 1e6);
      sink += copy.size();
    }
    double sp50 = sample_lat.Percentile(50), sp99 = sample_lat.Percentile(99);
    double sp90 = sample_lat.Percentile(90);
    double cp50 = copy_lat.Percentile(50), cp99 = copy_lat.Percentile(99);
    std::printf("  Sample(256) x2000: p50 %.0f us, p90 %.0f us, p99 %.0f us\n", sp50, sp90, sp99);
    std::printf("  reference, copying 256 samples out of a plain vector: p50 %.0f us, p99 %.0f us;"
                " ratio p50 %.2f, p99 %.2f (sink %zu)\n",
                cp50, cp99, sp50 / cp50, sp99 / cp99, sink);
  }

  // Resident memory of a fresh process that opens the store and the buffer.
  std::string self = std::filesystem::read_symlink("/proc/self/exe");
  std::string cmd = "'" + self + "' --rss-child '" + rb_path + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  long before = 0, after = 0;
  unsigned long long size = 0, bytes = 0, rocks = 0;
  if (p && std::fscanf(p, "%ld %ld %llu %llu %llu", &before, &after, &size, &bytes, &rocks) == 5) {
    std::printf("\nresident memory, fresh process: VmRSS %.1f MiB before open, %.1f MiB with the "
                "store and a %llu-sample buffer open (+%.1f MiB); buffer payload %.1f MiB; "
                "RocksDB estimate %.1f MiB\n",
                before / 1024.0, after / 1024.0, size, (after - before) / 1024.0,
                bytes / 1048576.0, rocks / 1048576.0);
  } else {
    std::printf("\nresident memory: child failed\n");
  }
  if (p) ::pclose(p);
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
}
