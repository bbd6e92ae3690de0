#include "storage/sample_store.h"

#include <doctest/doctest.h>

#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "tests/support/temp_dir.h"

namespace distilld::storage {
namespace {

Sample MakeSample(int64_t tag, int64_t time_us = 0) {
  Sample s;
  s.dtype = DType::kFloat32;
  s.shape = {2, 3};
  s.data.resize(24);
  for (size_t i = 0; i < s.data.size(); ++i) s.data[i] = static_cast<char>(tag * 31 + i);
  s.label = tag % 10;
  s.teacher_logits = {static_cast<float>(tag), 0.5f};
  s.ingest_time_us = time_us;
  s.request_id = "req-" + std::to_string(tag);
  return s;
}

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

TEST_CASE("append assigns consecutive ids and reads back in arrival order") {
  testing::TempDir dir;
  ManualClock clock(1'000'000);
  auto store = OpenStore(dir.str("db"), &clock);
  std::vector<Sample> batch1 = {MakeSample(1), MakeSample(2), MakeSample(3, 77)};
  auto r1 = store->AppendIncoming(batch1);
  REQUIRE(r1.ok());
  CHECK(r1->first == 1);
  CHECK(r1->last == 3);
  clock.Advance(10);
  std::vector<Sample> batch2 = {MakeSample(4)};
  auto r2 = store->AppendIncoming(batch2);
  REQUIRE(r2.ok());
  CHECK(r2->first == 4);
  CHECK(r2->last == 4);

  auto all = store->ReadIncoming(0, 100);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 4);
  for (size_t i = 0; i < 4; ++i) CHECK((*all)[i].id == i + 1);
  // Ingest time comes from the clock only when unset.
  CHECK((*all)[0].sample.ingest_time_us == 1'000'000);
  CHECK((*all)[2].sample.ingest_time_us == 77);
  CHECK((*all)[3].sample.ingest_time_us == 1'000'010);
  Sample expect = MakeSample(2, 1'000'000);
  CHECK((*all)[1].sample == expect);

  auto tail = store->ReadIncoming(2, 1);
  REQUIRE(tail.ok());
  REQUIRE(tail->size() == 1);
  CHECK((*tail)[0].id == 3);
  CHECK(*store->CountIncoming(0) == 4);
  CHECK(*store->CountIncoming(3) == 1);
  CHECK(*store->CountIncoming(4) == 0);
  CHECK(store->AppendIncoming({}).status().code() == StatusCode::kInvalidArgument);
  CHECK(store->ReadIncoming(UINT64_MAX, 10)->empty());
  CHECK(*store->CountIncoming(UINT64_MAX) == 0);
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

TEST_CASE("a batch with one bad sample stores nothing") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  std::vector<Sample> good = {MakeSample(1)};
  REQUIRE(store->AppendIncoming(good).ok());
  std::vector<Sample> batch = {MakeSample(2), MakeSample(3), MakeSample(4)};
  batch[2].data.pop_back();  // size no longer matches the shape
  auto r = store->AppendIncoming(batch);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("sample 2") != std::string::npos);
  CHECK(*store->CountIncoming(0) == 1);
  // The failed batch consumed no ids.
  auto next = store->AppendIncoming(good);
  REQUIRE(next.ok());
  CHECK(next->first == 2);
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

TEST_CASE("get, put and not found on incoming") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  std::vector<Sample> batch = {MakeSample(1, 9)};
  auto r = store->AppendIncoming(batch);
  REQUIRE(r.ok());
  Sample s = *store->GetIncoming(r->first);
  CHECK(s == batch[0]);
  s.label = 4;
  s.source = SampleSource::kFeedback;
  REQUIRE(store->PutIncoming(r->first, s).ok());
  CHECK(*store->GetIncoming(r->first) == s);
  CHECK(store->GetIncoming(99).status().code() == StatusCode::kNotFound);
  s.data.clear();
  CHECK(store->PutIncoming(r->first, s).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("raw families: apply, get, scan") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  std::vector<Mutation> m = {{Family::kState, "a/1", "x"},
                             {Family::kState, "a/2", "y"},
                             {Family::kState, "b/1", "z"},
                             {Family::kBuffer, "a/1", "other family"}};
  REQUIRE(store->Apply(m).ok());
  CHECK(store->Get(Family::kState, "a/2")->value() == "y");
  CHECK(store->Get(Family::kBuffer, "a/1")->value() == "other family");
  CHECK(!store->Get(Family::kHoldout, "a/1")->has_value());
  std::vector<std::string> keys;
  REQUIRE(store->Scan(Family::kState, "a/", [&](std::string_view k, std::string_view) {
                 keys.emplace_back(k);
                 return k != "a/2";
               }).ok());
  CHECK(keys == std::vector<std::string>{"a/1", "a/2"});
  std::vector<Mutation> del = {{Family::kState, "a/1", std::nullopt}};
  REQUIRE(store->Apply(del).ok());
  CHECK(!store->Get(Family::kState, "a/1")->has_value());
}

TEST_CASE("corrupt incoming records are skipped, logged and counted") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  std::vector<Sample> batch = {MakeSample(1, 1), MakeSample(2, 1), MakeSample(3, 1)};
  REQUIRE(store->AppendIncoming(batch).ok());
  std::vector<Mutation> m = {{Family::kIncoming, SampleStore::IncomingKey(2), "\x01garbage"},
                             {Family::kIncoming, "short", "x"}};
  REQUIRE(store->Apply(m).ok());
  auto all = store->ReadIncoming(0, 10);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].id == 1);
  CHECK((*all)[1].id == 3);
  CHECK((*all)[1].sample == batch[2]);
  CHECK(store->corrupt_records() == 2);
  CHECK(store->GetIncoming(2).status().code() == StatusCode::kCorruption);
  CHECK(store->corrupt_records() == 3);
}

TEST_CASE("concurrent appenders get disjoint ids and readers never skip one") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  constexpr int kThreads = 4, kBatches = 25, kBatchSize = 8;
  std::vector<std::vector<IdRange>> ranges(kThreads);
  std::atomic<bool> done{false};
  // A reader moving a cursor forward, as the learner does, must see every id.
  std::vector<SampleId> read_ids;
  std::thread reader([&] {
    SampleId cursor = 0;
    while (true) {
      bool finished = done.load();
      auto batch = store->ReadIncoming(cursor, 1000);
      REQUIRE(batch.ok());
      for (auto& s : *batch) {
        read_ids.push_back(s.id);
        cursor = s.id;
      }
      if (finished && batch->empty()) break;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<Sample> batch;
        for (int i = 0; i < kBatchSize; ++i) batch.push_back(MakeSample(t * 1000 + b * 10 + i, 1));
        auto r = store->AppendIncoming(batch);
        REQUIRE(r.ok());
        ranges[t].push_back(*r);
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  std::set<SampleId> ids;
  for (auto& rs : ranges) {
    for (auto& r : rs) {
      CHECK(r.last - r.first + 1 == kBatchSize);
      for (SampleId id = r.first; id <= r.last; ++id) CHECK(ids.insert(id).second);
    }
  }
  CHECK(ids.size() == kThreads * kBatches * kBatchSize);
  CHECK(*ids.rbegin() == kThreads * kBatches * kBatchSize);
  REQUIRE(read_ids.size() == ids.size());
  for (size_t i = 0; i < read_ids.size(); ++i) CHECK(read_ids[i] == i + 1);
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

TEST_CASE("incoming_generation changes with every write to incoming, and only then") {
  distilld::testing::TempDir dir;
  auto store = OpenStore(dir.str("db"), nullptr, false);
  uint64_t g = store->incoming_generation();
  auto bump = [&](const char* what) {
    INFO(what);
    const uint64_t now = store->incoming_generation();
    CHECK(now != g);
    g = now;
  };
  auto same = [&](const char* what) {
    INFO(what);
    CHECK(store->incoming_generation() == g);
  };
  std::vector<Sample> two = {MakeSample(1), MakeSample(2)};
  auto range = store->AppendIncoming(two);
  REQUIRE(range.ok());
  bump("append");
  REQUIRE(store->CountIncoming(0).value() == 2);
  REQUIRE(store->ReadIncoming(0, 10).ok());
  REQUIRE(store->GetIncoming(range->first).ok());
  same("reads");
  REQUIRE(store->PutIncoming(range->first, MakeSample(7)).ok());
  bump("put");
  REQUIRE(store->Apply(std::vector<Mutation>{{Family::kState, "k", std::string("v")}}).ok());
  same("apply to another family");
  REQUIRE(store->Apply(std::vector<Mutation>{{Family::kIncoming, SampleStore::IncomingKey(range->last),
                                              std::nullopt}})
              .ok());
  bump("apply deleting from incoming");
  CHECK(store->CountIncoming(0).value() == 1);
}

}  // namespace distilld::storage
