#include "storage/sample_store.h"

#include <doctest/doctest.h>

#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "tests/support/temp_dir.h"
#include "tests/support/test_samples.h"

namespace distilld::storage {
namespace {

using testing::MakeSample;

std::unique_ptr<SampleStore> OpenStore(const std::string& path, Clock* clock = nullptr,
                                       bool sync = true) {
  SampleStoreOptions o;
  o.path = path;
  o.clock = clock;
  o.sync = sync;
  auto r = SampleStore::Open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

TEST_CASE("ids sort numerically past byte boundaries") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"), nullptr, /*sync=*/false);
  std::vector<Sample> batch;
  for (int i = 0; i < 300; ++i) batch.push_back(MakeSample(i, 1));
  REQUIRE(store->AppendIncoming(batch).ok());
  auto all = store->ReadIncoming(0, 1000);
  REQUIRE(all->size() == 300);
  for (size_t i = 0; i < all->size(); ++i) {
    CHECK((*all)[i].id == i + 1);
    CHECK((*all)[i].sample.request_id == "req-" + std::to_string(i));
  }
  CHECK(SampleStore::IncomingKey(256) > SampleStore::IncomingKey(255));
  CHECK(SampleStore::IncomingKey(1ull << 40) > SampleStore::IncomingKey(256));
}

TEST_CASE("samples and the id counter survive reopen; ids are never reused") {
  testing::TempDir dir;
  std::vector<Sample> batch = {MakeSample(1, 5), MakeSample(2, 6)};
  {
    auto store = OpenStore(dir.str("db"));
    REQUIRE(store->AppendIncoming(batch).ok());
    REQUIRE(store->AppendIncoming(batch).ok());
  }
  {
    auto store = OpenStore(dir.str("db"));
    auto all = store->ReadIncoming(0, 10);
    REQUIRE(all->size() == 4);
    CHECK((*all)[3].sample == batch[1]);
    // The learner consumes and deletes everything.
    std::vector<Mutation> del;
    for (auto& s : *all) del.push_back({Family::kIncoming, SampleStore::IncomingKey(s.id), std::nullopt});
    REQUIRE(store->Apply(del).ok());
    CHECK(*store->CountIncoming(0) == 0);
  }
  auto store = OpenStore(dir.str("db"));
  auto r = store->AppendIncoming(batch);
  REQUIRE(r.ok());
  CHECK(r->first == 5);
}

TEST_CASE("sync counters: every synced write is covered by a WAL fsync") {
  testing::TempDir dir;
  {
    auto store = OpenStore(dir.str("synced"));
    std::vector<Sample> batch = {MakeSample(1, 1)};
    for (int i = 0; i < 5; ++i) REQUIRE(store->AppendIncoming(batch).ok());
    auto c = store->sync_counters();
    CHECK(c.synced_writes == 5);
    CHECK(c.wal_syncs >= 1);
    CHECK(c.wal_syncs <= c.synced_writes);
  }
  auto unsynced = OpenStore(dir.str("unsynced"), nullptr, /*sync=*/false);
  std::vector<Sample> batch = {MakeSample(1, 1)};
  REQUIRE(unsynced->AppendIncoming(batch).ok());
  CHECK(unsynced->sync_counters().synced_writes == 0);
  CHECK(unsynced->sync_counters().wal_syncs == 0);
}

TEST_CASE("memory stays within the budget and flush works") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"), nullptr, false);
  std::vector<Sample> batch;
  for (int i = 0; i < 256; ++i) batch.push_back(MakeSample(i, 1));
  for (int k = 0; k < 20; ++k) REQUIRE(store->AppendIncoming(batch).ok());
  uint64_t mem = store->ApproximateMemoryBytes();
  CHECK(mem > 0);
  CHECK(mem < 64u << 20);
  REQUIRE(store->Flush().ok());
  CHECK(*store->CountIncoming(0) == 20 * 256);
}

TEST_CASE("open errors are statuses") {
  SampleStoreOptions o;
  CHECK(SampleStore::Open(o).status().code() == StatusCode::kInvalidArgument);
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  o.path = dir.str("db");
  auto second = SampleStore::Open(o);  // the first one holds the lock
  CHECK(!second.ok());
  o.path = "/proc/definitely/not/writable";
  CHECK(!SampleStore::Open(o).ok());
}

}  // namespace
}  // namespace distilld::storage

namespace distilld::storage {
namespace {

// Nice values of this process's threads whose name starts with `prefix`.
std::vector<int> ThreadNice(const std::string& prefix) {
  std::vector<int> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind(prefix, 0) != 0) continue;
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the ")" that closes the name: state is field 3, nice 19.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 19 && rest >> field; ++i) {
      if (i == 19) out.push_back(std::stoi(field));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("compaction threads run at the lowest priority, flushes and callers at their own") {
  distilld::testing::TempDir dir;
  SampleStoreOptions o;
  o.path = dir.str("db");
  o.sync = false;
  o.write_buffer_bytes = 64 << 10;  // many small L0 files, so compactions run
  auto r = SampleStore::Open(o);
  REQUIRE(r.ok());
  auto store = std::move(r).value();
  const int caller_nice = ::getpriority(PRIO_PROCESS, 0);
  Sample big = MakeSample(1);
  big.data.assign(16 << 10, 'x');
  big.shape = {4096};
  std::vector<Sample> batch(16, big);
  std::vector<int> low;
  for (int round = 0; round < 200 && low.empty(); ++round) {
    REQUIRE(store->AppendIncoming(batch).ok());
    low = ThreadNice("rocksdb:low");
    // A pool thread applies the priority when it picks up its first job.
    if (!low.empty() && low.front() != 19) low.clear();
  }
  REQUIRE_MESSAGE(!low.empty(), "no compaction thread ran at nice 19");
  for (int n : low) CHECK(n == 19);
  for (int n : ThreadNice("rocksdb:high")) CHECK(n == caller_nice);
  CHECK(::getpriority(PRIO_PROCESS, 0) == caller_nice);
}

}  // namespace distilld::storage

namespace distilld::storage {

}  // namespace distilld::storage
