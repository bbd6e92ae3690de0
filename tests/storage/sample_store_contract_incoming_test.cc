// Contract of storage::SampleStore, continued (see sample_store_contract_test.cc
// for what a contract case is): the incoming family's ids, the cursor readers
// and the counts of pending samples (CountIncoming, IncomingCount,
// incoming_generation). Every templated case runs against the RocksDB store
// and testing::FakeSampleStore with the same assertions.
//
// Run one implementation with  -tc='*<rocksdb>'  or  -tc='*<fake>'.
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "storage/sample_store.h"
#include "tests/storage/sample_store_contract.h"
#include "tests/support/fake_sample_store.h"
#include "tests/support/test_samples.h"

namespace distilld::storage {
namespace {

using testing::MakeSample;

TEST_CASE_TEMPLATE("append assigns consecutive ids; read and count after a cursor", Impl, Rocks,
                   Fake) {
  Impl impl;
  ManualClock clock(1'000'000);
  auto store = impl.Open(&clock);
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
  CHECK(Ids(*all) == IdList{1, 2, 3, 4});
  REQUIRE(all->size() == 4);
  // The clock fills in only the ingest times that are unset.
  CHECK((*all)[0].sample == MakeSample(1, 1'000'000));
  CHECK((*all)[1].sample == MakeSample(2, 1'000'000));
  CHECK((*all)[2].sample == MakeSample(3, 77));
  CHECK((*all)[3].sample == MakeSample(4, 1'000'010));

  // The cursor is exclusive and max_count bounds the batch.
  CHECK(Ids(*store->ReadIncoming(2, 1)) == IdList{3});
  CHECK(Ids(*store->ReadIncoming(1, 10)) == IdList{2, 3, 4});
  CHECK(store->ReadIncoming(1, 0)->empty());
  CHECK(store->ReadIncoming(4, 10)->empty());
  CHECK(store->ReadIncoming(UINT64_MAX, 10)->empty());
  CHECK(*store->CountIncoming(0) == 4);
  CHECK(*store->CountIncoming(3) == 1);
  CHECK(*store->CountIncoming(4) == 0);
  CHECK(*store->CountIncoming(100) == 0);
  CHECK(*store->CountIncoming(UINT64_MAX) == 0);

  // Consumed samples leave gaps that the cursor readers step over.
  std::vector<Mutation> del = {{Family::kIncoming, SampleStore::IncomingKey(2), std::nullopt}};
  REQUIRE(store->Apply(del).ok());
  CHECK(Ids(*store->ReadIncoming(0, 100)) == IdList{1, 3, 4});
  CHECK(Ids(*store->ReadIncoming(1, 1)) == IdList{3});
  CHECK(*store->CountIncoming(0) == 3);
  CHECK(*store->CountIncoming(1) == 2);

  CHECK(store->AppendIncoming({}).status().code() == StatusCode::kInvalidArgument);
  // Ids keep counting up after deletes: they are never reused.
  auto r3 = store->AppendIncoming(batch2);
  REQUIRE(r3.ok());
  CHECK(r3->first == 5);
}

TEST_CASE_TEMPLATE("a batch with an invalid sample stores nothing and uses no ids", Impl, Rocks,
                   Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  std::vector<Sample> good = {MakeSample(1)};
  REQUIRE(store->AppendIncoming(good).ok());
  const uint64_t generation = store->incoming_generation();
  std::vector<Sample> batch = {MakeSample(2), MakeSample(3), MakeSample(4)};
  batch[2].data.pop_back();  // size no longer matches the shape
  auto r = store->AppendIncoming(batch);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("sample 2") != std::string::npos);
  CHECK(*store->CountIncoming(0) == 1);
  CHECK(store->incoming_generation() == generation);
  auto next = store->AppendIncoming(good);
  REQUIRE(next.ok());
  CHECK(next->first == 2);
}

TEST_CASE_TEMPLATE("incoming_generation changes on every write to incoming, and only then", Impl,
                   Rocks, Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  uint64_t g = store->incoming_generation();
  auto changed = [&](const char* what) {
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
  changed("append");
  REQUIRE(store->CountIncoming(0).ok());
  REQUIRE(store->ReadIncoming(0, 10).ok());
  REQUIRE(store->GetIncoming(range->first).ok());
  REQUIRE(store->Get(Family::kIncoming, SampleStore::IncomingKey(1)).ok());
  REQUIRE(ScanKeys(*store, Family::kIncoming).size() == 2);
  same("reads");
  REQUIRE(store->PutIncoming(range->first, MakeSample(7)).ok());
  changed("put");
  REQUIRE(store
              ->Apply(std::vector<Mutation>{{Family::kState, "k", std::string("v")},
                                            {Family::kBuffer, "b", std::string("v")}})
              .ok());
  same("apply to other families");
  REQUIRE(store->Apply(std::vector<Mutation>{}).ok());
  same("empty apply");
  REQUIRE(store
              ->Apply(std::vector<Mutation>{
                  {Family::kIncoming, SampleStore::IncomingKey(range->last), std::nullopt}})
              .ok());
  changed("apply deleting from incoming");
  REQUIRE(store
              ->Apply(std::vector<Mutation>{{Family::kState, "k2", std::string("v")},
                                            {Family::kIncoming, SampleStore::IncomingKey(9),
                                             *EncodeSample(MakeSample(9, 1))}})
              .ok());
  changed("apply putting to incoming among other families");
  std::vector<Sample> bad = {MakeSample(3)};
  bad[0].shape = {7};
  CHECK(store->AppendIncoming(bad).status().code() == StatusCode::kInvalidArgument);
  CHECK(store->PutIncoming(1, bad[0]).code() == StatusCode::kInvalidArgument);
  same("refused writes");
  REQUIRE(store->Flush().ok());
  same("flush");
}

TEST_CASE_TEMPLATE("incoming ids past the last assigned one stay hidden from the cursor readers",
                   Impl, Rocks, Fake) {
  // Pinned so the fake does not drift from the real store, not as a feature
  // to build on: readers stop at the next id to assign (the real store hides
  // ids of appends still in flight that way), so a record put at a higher id
  // is invisible to them until appends get there, and the append that
  // reaches its id overwrites it.
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  std::vector<Sample> two = {MakeSample(1, 1), MakeSample(2, 1)};
  REQUIRE(store->AppendIncoming(two).ok());
  REQUIRE(store->PutIncoming(5, MakeSample(50, 1)).ok());
  CHECK(*store->GetIncoming(5) == MakeSample(50, 1));
  CHECK(ScanKeys(*store, Family::kIncoming).size() == 3);
  CHECK(Ids(*store->ReadIncoming(0, 10)) == IdList{1, 2});
  CHECK(*store->CountIncoming(0) == 2);
  CHECK(*store->CountIncoming(2) == 0);
  std::vector<Sample> three = {MakeSample(3, 1), MakeSample(4, 1), MakeSample(5, 1)};
  auto r = store->AppendIncoming(three);
  REQUIRE(r.ok());
  CHECK(r->first == 3);
  CHECK(r->last == 5);
  auto read = store->ReadIncoming(2, 10);
  REQUIRE(read.ok());
  CHECK(Ids(*read) == IdList{3, 4, 5});
  REQUIRE(read->size() == 3);
  CHECK((*read)[2].sample == MakeSample(5, 1));
}

TEST_CASE_TEMPLATE("concurrent appenders get disjoint ranges and a cursor reader sees every id",
                   Impl, Rocks, Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  constexpr int kThreads = 4, kBatches = 20, kBatchSize = 8;
  std::vector<std::vector<IdRange>> ranges(kThreads);
  std::vector<int> failures(kThreads, 0);
  std::atomic<bool> done{false};
  // A reader that moves its cursor forward, as the learner does.
  std::vector<SampleId> read_ids;
  int read_failures = 0;
  std::thread reader([&] {
    SampleId cursor = 0;
    while (true) {
      const bool finished = done.load();
      auto batch = store->ReadIncoming(cursor, 1000);
      if (!batch.ok()) {
        ++read_failures;
        break;
      }
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
        if (r.ok()) {
          ranges[t].push_back(*r);
        } else {
          ++failures[t];
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  CHECK(failures == std::vector<int>(kThreads, 0));
  CHECK(read_failures == 0);
  std::set<SampleId> ids;
  bool sized = true, disjoint = true;
  for (auto& rs : ranges) {
    for (auto& r : rs) {
      sized = sized && r.last - r.first + 1 == kBatchSize;
      for (SampleId id = r.first; id <= r.last; ++id) disjoint = ids.insert(id).second && disjoint;
    }
  }
  CHECK(sized);
  CHECK(disjoint);
  constexpr size_t kTotal = kThreads * kBatches * kBatchSize;
  CHECK(ids.size() == kTotal);
  CHECK(*ids.rbegin() == kTotal);
  std::vector<SampleId> expected(kTotal);
  for (size_t i = 0; i < kTotal; ++i) expected[i] = i + 1;
  CHECK(read_ids == expected);
  CHECK(*store->CountIncoming(0) == kTotal);
}

// Sample records in "incoming" as Scan sees them: the count IncomingCount keeps.
uint64_t StoredSamples(SampleStore& store) {
  uint64_t n = 0;
  for (const std::string& key : ScanKeys(store, Family::kIncoming)) n += key.size() == 8;
  return n;
}

TEST_CASE_TEMPLATE("IncomingCount: an append adds its batch, a put only a new id", Impl, Rocks,
                   Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  CHECK(store->IncomingCount() == 0);
  std::vector<Sample> three = {MakeSample(1, 1), MakeSample(2, 1), MakeSample(3, 1)};
  REQUIRE(store->AppendIncoming(three).ok());
  CHECK(store->IncomingCount() == 3);

  std::vector<Sample> bad = {MakeSample(4, 1)};
  bad[0].data.clear();
  CHECK(store->AppendIncoming(bad).status().code() == StatusCode::kInvalidArgument);
  CHECK(store->PutIncoming(1, bad[0]).code() == StatusCode::kInvalidArgument);
  CHECK(store->IncomingCount() == 3);

  // Feedback attaching a label replaces a stored sample.
  REQUIRE(store->PutIncoming(2, MakeSample(20, 1)).ok());
  CHECK(store->IncomingCount() == 3);
  CHECK(*store->CountIncoming(0) == 3);

  // A put past the last assigned id stores a sample the cursor readers do not
  // see yet; the append that reaches its id overwrites it, so 4..6 add two.
  REQUIRE(store->PutIncoming(6, MakeSample(60, 1)).ok());
  CHECK(store->IncomingCount() == 4);
  CHECK(*store->CountIncoming(0) == 3);
  std::vector<Sample> next = {MakeSample(4, 1), MakeSample(5, 1), MakeSample(6, 1)};
  auto r = store->AppendIncoming(next);
  REQUIRE(r.ok());
  CHECK(r->last == 6);
  CHECK(store->IncomingCount() == 6);
  CHECK(*store->CountIncoming(0) == 6);
  REQUIRE(store->AppendIncoming(three).ok());
  CHECK(store->IncomingCount() == 9);
  CHECK(store->IncomingCount() == StoredSamples(*store));
}

TEST_CASE_TEMPLATE("IncomingCount: Apply counts the samples it adds and removes, not the keys",
                   Impl, Rocks, Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  std::vector<Sample> four = {MakeSample(1, 1), MakeSample(2, 1), MakeSample(3, 1),
                              MakeSample(4, 1)};
  REQUIRE(store->AppendIncoming(four).ok());
  const std::string value = *EncodeSample(MakeSample(10, 1));
  auto key = [](SampleId id) { return SampleStore::IncomingKey(id); };
  auto apply = [&](const std::vector<Mutation>& m) {
    REQUIRE(store->Apply(m).ok());
    return store->IncomingCount();
  };

  // The learner rewrites stored samples with their teacher logits.
  CHECK(apply({{Family::kIncoming, key(1), value}, {Family::kIncoming, key(2), value}}) == 4);
  // A delete counts only if the sample is there, and once per batch.
  CHECK(apply({{Family::kIncoming, key(99), std::nullopt}}) == 4);
  CHECK(apply({{Family::kIncoming, key(3), std::nullopt},
               {Family::kIncoming, key(3), std::nullopt}}) == 3);
  CHECK(apply({{Family::kIncoming, key(3), std::nullopt}}) == 3);
  // Mutations of one key count in batch order: the last one decides.
  CHECK(apply({{Family::kIncoming, key(2), std::nullopt}, {Family::kIncoming, key(2), value}}) == 3);
  CHECK(apply({{Family::kIncoming, key(3), value}, {Family::kIncoming, key(3), std::nullopt}}) == 3);
  CHECK(apply({{Family::kIncoming, key(3), value}}) == 4);
  // Other keys of "incoming" and other families hold no incoming samples.
  CHECK(apply({{Family::kIncoming, "short", "x"},
               {Family::kBuffer, key(9), value},
               {Family::kHoldout, key(8), value}}) == 4);
  CHECK(*store->CountIncoming(0) == 4);

  // A round as the learner consumes it: the held-out share leaves "incoming"
  // with the holdout write, then the consume deletes every sample of the
  // round, the held-out one again.
  CHECK(apply({{Family::kHoldout, "h/1", value},
               {Family::kIncoming, key(1), std::nullopt},
               {Family::kState, "split", "1"}}) == 3);
  std::vector<Mutation> consume;
  for (SampleId id = 1; id <= 4; ++id) consume.push_back({Family::kIncoming, key(id), std::nullopt});
  consume.push_back({Family::kState, "cursor", "4"});
  CHECK(apply(consume) == 0);
  CHECK(*store->CountIncoming(0) == 0);
  CHECK(apply(consume) == 0);  // nothing left to remove: no wrap-around below zero
  CHECK(StoredSamples(*store) == 0);
}

TEST_CASE_TEMPLATE("IncomingCount stays exact while appends, puts and deletes of the same ids race",
                   Impl, Rocks, Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  constexpr int kAppenders = 2, kBatches = 40, kBatchSize = 4;
  constexpr SampleId kIds = kAppenders * kBatches * kBatchSize;  // every id the appends assign
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kAppenders; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<Sample> batch;
        for (int i = 0; i < kBatchSize; ++i) batch.push_back(MakeSample(t * 1000 + b * 10 + i, 1));
        failures += !store->AppendIncoming(batch).ok();
      }
    });
  }
  // Two consumers delete the same ids, each racing the other and, when ahead
  // of the appends, the append that assigns the id.
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (SampleId id = 1; id + 1 <= kIds; id += 3) {
        std::vector<Mutation> m = {{Family::kIncoming, SampleStore::IncomingKey(id), std::nullopt},
                                   {Family::kIncoming, SampleStore::IncomingKey(id + 1), std::nullopt},
                                   {Family::kState, "cursor", std::to_string(id)}};
        failures += !store->Apply(m).ok();
      }
    });
  }
  // Labels put over ids stored, deleted or not assigned yet.
  threads.emplace_back([&] {
    for (SampleId id = 2; id <= kIds; id += 5) {
      failures += !store->PutIncoming(id, MakeSample(static_cast<int64_t>(id), 1)).ok();
    }
  });
  for (auto& t : threads) t.join();
  CHECK(failures.load() == 0);
  const uint64_t stored = StoredSamples(*store);
  CHECK(stored > 0);
  CHECK(store->IncomingCount() == stored);
  CHECK(*store->CountIncoming(0) == stored);
}

TEST_CASE("rocksdb: IncomingCount survives a reopen: Open counts the stored samples") {
  Rocks rocks;
  ManualClock clock;
  std::vector<Sample> five = {MakeSample(1, 1), MakeSample(2, 1), MakeSample(3, 1),
                              MakeSample(4, 1), MakeSample(5, 1)};
  {
    auto store = rocks.Open(&clock);
    REQUIRE(store->AppendIncoming(five).ok());
    REQUIRE(store->Flush().ok());  // these from SST files, the rest from the WAL
    std::vector<Mutation> m = {{Family::kIncoming, SampleStore::IncomingKey(2), std::nullopt},
                               {Family::kIncoming, SampleStore::IncomingKey(99), std::nullopt},
                               {Family::kIncoming, "short", "x"}};
    REQUIRE(store->Apply(m).ok());
    REQUIRE(store->PutIncoming(9, MakeSample(9, 1)).ok());
    CHECK(store->IncomingCount() == 5);
  }
  auto store = rocks.Open(&clock);
  CHECK(store->IncomingCount() == 5);
  CHECK(StoredSamples(*store) == 5);
  // Open moves the next id past the stored id 9, so new appends are all new.
  std::vector<Sample> two = {MakeSample(6, 1), MakeSample(7, 1)};
  auto r = store->AppendIncoming(two);
  REQUIRE(r.ok());
  CHECK(r->first == 10);
  CHECK(store->IncomingCount() == 7);
  std::vector<Mutation> consume = {{Family::kIncoming, SampleStore::IncomingKey(1), std::nullopt}};
  REQUIRE(store->Apply(consume).ok());
  CHECK(store->IncomingCount() == 6);
}

// The fault injection exists only in the fake.
TEST_CASE("fake: a write that fails leaves IncomingCount as it was") {
  ManualClock clock;
  testing::FakeSampleStore store(&clock);
  std::vector<Sample> two = {MakeSample(1, 1), MakeSample(2, 1)};
  REQUIRE(store.AppendIncoming(two).ok());
  store.FailNextWrites(3);
  CHECK(store.AppendIncoming(two).status().code() == StatusCode::kIoError);
  CHECK(store.PutIncoming(9, MakeSample(9, 1)).code() == StatusCode::kIoError);
  std::vector<Mutation> del = {{Family::kIncoming, SampleStore::IncomingKey(1), std::nullopt}};
  CHECK(store.Apply(del).code() == StatusCode::kIoError);
  CHECK(store.IncomingCount() == 2);
  REQUIRE(store.Apply(del).ok());
  CHECK(store.IncomingCount() == 1);
}

}  // namespace
}  // namespace distilld::storage
