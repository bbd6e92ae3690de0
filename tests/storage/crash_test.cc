// Kills a writer with SIGKILL at random moments and checks that everything it
// acknowledged survived, byte for byte, and that the replay buffer it was
// feeding is exactly the state after some completed Offer().
//
// SIGKILL tests process crashes: data the OS has accepted survives them even
// without fsync. Power loss is covered by sync=true (WAL fsync before the
// acknowledgement) and is not simulated here.
//
// DISTILLD_CRASH_CYCLES (default 20) and DISTILLD_CRASH_SEED change the run;
// bench/storage/crash_stress.sh runs a long one.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "replaybuffer/replay_buffer.h"
#include "storage/sample_store.h"
#include "tests/storage/crash_samples.h"
#include "tests/support/temp_dir.h"

namespace distilld {
namespace {

#ifdef DISTILLD_TSAN
constexpr int kSlowdown = 6;  // the helper opens and appends ~6x slower under TSan
#else
constexpr int kSlowdown = 1;
#endif

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

struct ChildRun {
  std::string output;
  bool killed = false;  // died of our SIGKILL (not by exiting on its own)
  int status = 0;
};

// Runs the helper, lets it work for `run_for`, then SIGKILLs it and collects
// everything it printed.
ChildRun RunAndKill(const std::string& store_dir, uint64_t first_batch,
                    std::chrono::milliseconds run_for) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::string first = std::to_string(first_batch);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execl(DISTILLD_CRASH_HELPER, DISTILLD_CRASH_HELPER, store_dir.c_str(), first.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  ChildRun run;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + run_for;
  // Keep the pipe drained while the child runs, so it never blocks on it.
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) > 0) {
      ssize_t n = ::read(fds[0], buf, sizeof(buf));
      if (n <= 0) break;  // the child exited early; reported below
      run.output.append(buf, static_cast<size_t>(n));
    }
  }
  ::kill(pid, SIGKILL);
  REQUIRE(::waitpid(pid, &run.status, 0) == pid);
  run.killed = WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL;
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) run.output.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  return run;
}

TEST_CASE("acknowledged samples and the replay buffer survive SIGKILL") {
  const uint64_t cycles = EnvOr("DISTILLD_CRASH_CYCLES", 20);
  const uint64_t seed = EnvOr("DISTILLD_CRASH_SEED", 20261128);
  MESSAGE("crash test: " << cycles << " cycles, seed " << seed);
  testing::TempDir dir;
  const std::string path = dir.str("samples");
  std::mt19937_64 rng(seed);

  std::map<uint64_t, storage::IdRange> acked;  // batch -> its ids, over all cycles
  uint64_t next_batch = 0;
  uint64_t verified_seen = 0;  // buffer's `seen` as verified after the last cycle
  uint64_t total_acked_samples = 0;

  for (uint64_t cycle = 0; cycle < cycles; ++cycle) {
    CAPTURE(cycle);
    // Open takes some milliseconds; kills land in open, append and offer.
    auto run_for = std::chrono::milliseconds((15 + rng() % 250) * kSlowdown);
    ChildRun run = RunAndKill(path, next_batch, run_for);
    REQUIRE_MESSAGE(run.killed, "helper exited on its own, status " << run.status);

    // Complete lines only; the last one may be cut short by the kill.
    std::vector<uint64_t> new_batches;
    uint64_t offered = 0;
    std::optional<uint64_t> unoffered;  // acknowledged, not yet offered
    std::istringstream in(run.output.substr(0, run.output.rfind('\n') + 1));
    std::string kind;
    while (in >> kind) {
      uint64_t b = 0;
      in >> b;
      if (kind == "A") {
        storage::IdRange r;
        in >> r.first >> r.last;
        REQUIRE(r.last - r.first + 1 == crashtest::BatchSize(b));
        acked[b] = r;
        new_batches.push_back(b);
        total_acked_samples += crashtest::BatchSize(b);
        unoffered = b;
        next_batch = b + 1;
      } else {
        REQUIRE(kind == "O");
        REQUIRE(unoffered == b);
        offered += crashtest::BatchSize(b);
        unoffered.reset();
      }
    }

    storage::SampleStoreOptions so;
    so.path = path;
    auto store = storage::SampleStore::Open(so);
    REQUIRE_MESSAGE(store.ok(), store.status().ToString());

    // Every acknowledged sample of this cycle, byte for byte, plus a random
    // sample of older ones (all of them on the last cycle).
    auto check_batch = [&](uint64_t b) {
      const storage::IdRange& r = acked.at(b);
      for (size_t i = 0; i < crashtest::BatchSize(b); ++i) {
        auto got = (*store)->GetIncoming(r.first + i);
        REQUIRE_MESSAGE(got.ok(), "batch " << b << " sample " << i << ": " << got.status().ToString());
        storage::Sample want = crashtest::MakeSample(b, i);
        CHECK(*storage::EncodeSample(*got) == *storage::EncodeSample(want));
      }
    };
    for (uint64_t b : new_batches) check_batch(b);
    if (cycle + 1 == cycles) {
      for (auto& [b, r] : acked) check_batch(b);
    } else if (!acked.empty()) {
      for (int k = 0; k < 20; ++k) {
        auto it = acked.begin();
        std::advance(it, static_cast<long>(rng() % acked.size()));
        check_batch(it->first);
      }
    }
    // Arrival order: ids strictly increase and every record decodes.
    auto all = (*store)->ReadIncoming(0, SIZE_MAX);
    REQUIRE(all.ok());
    for (size_t i = 1; i < all->size(); ++i) CHECK((*all)[i - 1].id < (*all)[i].id);
    CHECK((*store)->corrupt_records() == 0);

    // The buffer is the state after some completed Offer: its seen counter
    // covers every acknowledged Offer and at most the one batch in flight.
    replaybuffer::ReplayBufferOptions bo;
    bo.capacity = crashtest::kBufferCapacity;
    bo.policy = replaybuffer::Policy::kReservoir;
    auto buffer = replaybuffer::ReplayBuffer::Open(store->get(), bo);
    REQUIRE_MESSAGE(buffer.ok(), buffer.status().ToString());
    replaybuffer::BufferStats st = (*buffer)->Stats();
    uint64_t low = verified_seen + offered;
    uint64_t high = low + (unoffered ? crashtest::BatchSize(*unoffered) : 0);
    CHECK(st.seen >= low);
    CHECK(st.seen <= high);
    CHECK(st.size == std::min<uint64_t>(bo.capacity, st.seen));
    uint64_t by_class = 0;
    for (auto& [c, n] : st.class_counts) by_class += n;
    CHECK(by_class == st.size);
    std::mt19937_64 srng(cycle);
    auto contents = (*buffer)->Sample(st.size, srng);
    REQUIRE(contents.ok());
    REQUIRE(contents->size() == st.size);
    std::set<std::string> ids;
    uint64_t bytes = 0;
    for (auto& s : *contents) {
      uint64_t b = 0;
      size_t i = 0;
      REQUIRE(crashtest::ParseRequestId(s.request_id, &b, &i));
      CHECK(s == crashtest::MakeSample(b, i));
      CHECK(ids.insert(s.request_id).second);
      bytes += storage::EncodeSample(s)->size();
    }
    CHECK(bytes == st.bytes);
    verified_seen = st.seen;
  }
  MESSAGE("acknowledged " << acked.size() << " batches, " << total_acked_samples
                          << " samples; buffer saw " << verified_seen);
  // The run must have done real work, or it proved nothing.
  CHECK(total_acked_samples > 0);
  CHECK(verified_seen > crashtest::kBufferCapacity);
}

}  // namespace
}  // namespace distilld
