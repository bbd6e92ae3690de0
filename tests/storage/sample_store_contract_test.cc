// Contract of storage::SampleStore: every templated case runs against the
// RocksDB store and against testing::FakeSampleStore with the same
// assertions. A unit test may use the fake only for behaviour pinned here;
// when the real store changes observable behaviour, a case here fails for one
// of the two and the fake is updated with it.
//
// This suite: records and raw access (the sample encoding, Apply, Get and
// Scan, corrupt records, flush, the fake's fault injection). Incoming ids,
// the cursor readers and the pending-sample counts are in
// sample_store_contract_incoming_test.cc.
//
// Run one implementation with  -tc='*<rocksdb>'  or  -tc='*<fake>'.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "storage/sample_store.h"
#include "tests/storage/sample_store_contract.h"
#include "tests/support/fake_sample_store.h"
#include "tests/support/test_samples.h"

namespace distilld::storage {
namespace {

using testing::MakeSample;

TEST_CASE_TEMPLATE("get and put incoming; stored records are the sample encoding", Impl, Rocks,
                   Fake) {
  Impl impl;
  ManualClock clock(123'456);
  auto store = impl.Open(&clock);
  std::vector<Sample> batch = {MakeSample(1, 9), MakeSample(2)};
  auto r = store->AppendIncoming(batch);
  REQUIRE(r.ok());
  CHECK(*store->GetIncoming(r->first) == batch[0]);
  // Components that write incoming through Apply (the learner attaching
  // teacher logits) rely on the raw record being EncodeSample's bytes.
  CHECK(GetValue(*store, Family::kIncoming, SampleStore::IncomingKey(r->first)) ==
        *EncodeSample(batch[0]));
  CHECK(GetValue(*store, Family::kIncoming, SampleStore::IncomingKey(r->last)) ==
        *EncodeSample(MakeSample(2, 123'456)));

  Sample s = batch[0];
  s.label = 4;
  s.source = SampleSource::kFeedback;
  REQUIRE(store->PutIncoming(r->first, s).ok());
  CHECK(*store->GetIncoming(r->first) == s);

  Sample with_logits = MakeSample(2, 5);
  with_logits.teacher_logits = {0.25f, -1.0f, 3.5f};
  std::vector<Mutation> m = {
      {Family::kIncoming, SampleStore::IncomingKey(r->last), *EncodeSample(with_logits)}};
  REQUIRE(store->Apply(m).ok());
  auto read = store->ReadIncoming(r->first, 10);
  REQUIRE(read.ok());
  REQUIRE(read->size() == 1);
  CHECK((*read)[0].sample == with_logits);

  CHECK(store->GetIncoming(99).status().code() == StatusCode::kNotFound);
  CHECK(store->GetIncoming(0).status().code() == StatusCode::kNotFound);
  Sample empty = s;
  empty.data.clear();
  CHECK(store->PutIncoming(r->first, empty).code() == StatusCode::kInvalidArgument);
  CHECK(*store->GetIncoming(r->first) == s);  // the refused put changed nothing
}

TEST_CASE_TEMPLATE("Apply: puts and deletes across families in one batch, in order", Impl, Rocks,
                   Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  std::vector<Mutation> setup = {{Family::kState, "a", std::string("1")},
                                 {Family::kState, "b", std::string("2")},
                                 {Family::kBuffer, "x", std::string("old")},
                                 {Family::kHoldout, "h", std::string("keep")}};
  REQUIRE(store->Apply(setup).ok());
  std::vector<Sample> two = {MakeSample(1, 1), MakeSample(2, 1)};
  REQUIRE(store->AppendIncoming(two).ok());

  std::vector<Mutation> batch = {
      {Family::kBuffer, "x", std::string("new")},  // overwrite
      {Family::kState, "a", std::nullopt},         // delete
      {Family::kHoldout, "h2", std::string("v")},  // insert
      {Family::kIncoming, SampleStore::IncomingKey(1), std::nullopt},
      {Family::kState, "c", std::string("first")},
      {Family::kState, "c", std::string("second")},  // later mutation wins
      {Family::kBuffer, "tmp", std::string("t")},
      {Family::kBuffer, "tmp", std::nullopt},     // put then delete: gone
      {Family::kState, "missing", std::nullopt},  // deleting nothing is fine
  };
  REQUIRE(store->Apply(batch).ok());
  CHECK(GetValue(*store, Family::kBuffer, "x") == "new");
  CHECK(!GetValue(*store, Family::kState, "a").has_value());
  CHECK(GetValue(*store, Family::kState, "b") == "2");
  CHECK(GetValue(*store, Family::kHoldout, "h") == "keep");
  CHECK(GetValue(*store, Family::kHoldout, "h2") == "v");
  CHECK(GetValue(*store, Family::kState, "c") == "second");
  CHECK(!GetValue(*store, Family::kBuffer, "tmp").has_value());
  CHECK(!GetValue(*store, Family::kState, "missing").has_value());
  CHECK(store->GetIncoming(1).status().code() == StatusCode::kNotFound);
  CHECK(Ids(*store->ReadIncoming(0, 10)) == IdList{2});
  CHECK(ScanKeys(*store, Family::kBuffer) == Keys{"x"});
  CHECK(ScanKeys(*store, Family::kHoldout) == Keys{"h", "h2"});
  // Families are separate key spaces: the same key lives in each on its own.
  std::vector<Mutation> same_key = {{Family::kBuffer, "k", std::string("buffer")},
                                    {Family::kHoldout, "k", std::string("holdout")},
                                    {Family::kBuffer, "x", std::nullopt}};
  REQUIRE(store->Apply(same_key).ok());
  CHECK(GetValue(*store, Family::kBuffer, "k") == "buffer");
  CHECK(GetValue(*store, Family::kHoldout, "k") == "holdout");
  CHECK(ScanKeys(*store, Family::kBuffer) == Keys{"k"});
}

TEST_CASE_TEMPLATE("a concurrent scan never sees part of an Apply", Impl, Rocks, Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  // The writer goes on until the reader has scanned this often, so the two
  // overlap even when writes are as fast as the fake's; the cap only ends a
  // run whose reader stalls.
  constexpr int kMinGenerations = 200, kMinScans = 100, kMaxGenerations = 1'000'000, kKeys = 5;
  // Generation g: k0..k4 = g and one "d/<g>" marker (the previous one is
  // deleted in the same batch); the holdout write makes each batch span two
  // families.
  auto batch_for = [](int g) {
    char marker[16];
    std::vector<Mutation> m;
    for (int k = 0; k < kKeys; ++k)
      m.push_back({Family::kBuffer, "k" + std::to_string(k), std::to_string(g)});
    std::snprintf(marker, sizeof marker, "d/%07d", g);
    m.push_back({Family::kBuffer, marker, std::to_string(g)});
    if (g > 0) {
      std::snprintf(marker, sizeof marker, "d/%07d", g - 1);
      m.push_back({Family::kBuffer, marker, std::nullopt});
    }
    m.push_back({Family::kHoldout, "g", std::to_string(g)});
    return m;
  };
  REQUIRE(store->Apply(batch_for(0)).ok());
  std::atomic<bool> done{false};
  std::atomic<int> scans{0};
  int torn = 0;
  std::thread reader([&] {
    while (!done.load()) {
      std::set<std::string> values;
      int markers = 0;
      Status st = store->Scan(Family::kBuffer, "", [&](std::string_view k, std::string_view v) {
        markers += k.starts_with("d/");
        values.emplace(v);
        return true;
      });
      if (!st.ok() || markers != 1 || values.size() != 1) ++torn;
      scans.fetch_add(1);
    }
  });
  int failed_applies = 0, g = 0;
  while (g < kMaxGenerations && (g < kMinGenerations || scans.load() < kMinScans)) {
    failed_applies += !store->Apply(batch_for(++g)).ok();
  }
  done = true;
  reader.join();
  CHECK(failed_applies == 0);
  CHECK(scans.load() >= kMinScans);
  CHECK(torn == 0);
  char last[16];
  std::snprintf(last, sizeof last, "d/%07d", g);
  CHECK(ScanKeys(*store, Family::kBuffer) == Keys{last, "k0", "k1", "k2", "k3", "k4"});
  CHECK(GetValue(*store, Family::kHoldout, "g") == std::to_string(g));
}

TEST_CASE_TEMPLATE("Get and Scan: bytewise key order from a start key", Impl, Rocks, Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  // Inserted out of order; bytes >= 0x80 sort after 0x7f (unsigned), and a
  // prefix sorts before its extensions, embedded NUL included.
  const Keys inserted = {"m", "b", std::string("a\0", 2), "\x80", "ab", "\xff\x01", "a", "\x7f"};
  const Keys sorted = {"a", std::string("a\0", 2), "ab", "b", "m", "\x7f", "\x80", "\xff\x01"};
  std::vector<Mutation> m;
  for (const auto& k : inserted) m.push_back({Family::kBuffer, k, k + "!"});
  m.push_back({Family::kState, "zz", std::string("state")});
  REQUIRE(store->Apply(m).ok());

  CHECK(ScanKeys(*store, Family::kBuffer) == sorted);
  CHECK(ScanKeys(*store, Family::kBuffer, "aa") == Keys(sorted.begin() + 2, sorted.end()));
  CHECK(ScanKeys(*store, Family::kBuffer, "b") == Keys(sorted.begin() + 3, sorted.end()));
  CHECK(ScanKeys(*store, Family::kBuffer, "\x80") == Keys{"\x80", "\xff\x01"});
  CHECK(ScanKeys(*store, Family::kBuffer, "\xff\x02").empty());
  CHECK(ScanKeys(*store, Family::kHoldout).empty());
  CHECK(ScanKeys(*store, Family::kState) == Keys{"zz"});

  // Values come with their keys, and fn returning false stops the scan.
  std::vector<std::pair<std::string, std::string>> seen;
  REQUIRE(store
              ->Scan(Family::kBuffer, "ab",
                     [&](std::string_view k, std::string_view v) {
                       seen.emplace_back(k, v);
                       return seen.size() < 2;
                     })
              .ok());
  CHECK(seen == std::vector<std::pair<std::string, std::string>>{{"ab", "ab!"}, {"b", "b!"}});

  CHECK(GetValue(*store, Family::kBuffer, std::string("a\0", 2)) == std::string("a\0!", 3));
  CHECK(GetValue(*store, Family::kBuffer, "\xff\x01") == "\xff\x01!");
  CHECK(!GetValue(*store, Family::kBuffer, "zz").has_value());
  CHECK(!GetValue(*store, Family::kState, "m").has_value());

  // A scan visits the records as they were when it started, and fn may
  // write to the store: the replay buffer deletes while it walks.
  Keys visited;
  REQUIRE(store
              ->Scan(Family::kBuffer, "",
                     [&](std::string_view k, std::string_view) {
                       visited.emplace_back(k);
                       std::vector<Mutation> wipe;
                       for (const auto& key : sorted)
                         wipe.push_back({Family::kBuffer, key, std::nullopt});
                       wipe.push_back({Family::kBuffer, "z-added-during-scan", std::string("x")});
                       return store->Apply(wipe).ok();
                     })
              .ok());
  CHECK(visited == sorted);
  CHECK(ScanKeys(*store, Family::kBuffer) == Keys{"z-added-during-scan"});
}

TEST_CASE_TEMPLATE("corrupt incoming records are skipped by readers and counted", Impl, Rocks,
                   Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  std::vector<Sample> batch = {MakeSample(1, 1), MakeSample(2, 1), MakeSample(3, 1)};
  REQUIRE(store->AppendIncoming(batch).ok());
  std::vector<Mutation> m = {{Family::kIncoming, SampleStore::IncomingKey(2), "\x01garbage"},
                             {Family::kIncoming, "short", "x"}};
  REQUIRE(store->Apply(m).ok());
  CHECK(store->corrupt_records() == 0);
  auto all = store->ReadIncoming(0, 10);
  REQUIRE(all.ok());
  CHECK(Ids(*all) == IdList{1, 3});
  REQUIRE(all->size() == 2);
  CHECK((*all)[1].sample == batch[2]);
  CHECK(store->corrupt_records() == 2);  // id 2 and the 5-byte key
  // Counting looks at keys only, so the undecodable record still counts.
  CHECK(*store->CountIncoming(0) == 3);
  CHECK(store->corrupt_records() == 2);
  CHECK(store->GetIncoming(2).status().code() == StatusCode::kCorruption);
  CHECK(store->corrupt_records() == 3);
  // Every read that walks over a bad record counts it again; one that stops
  // at max_count before the short key does not reach it.
  CHECK(Ids(*store->ReadIncoming(0, 2)) == IdList{1, 3});
  CHECK(store->corrupt_records() == 4);
}

TEST_CASE_TEMPLATE("the id counter is a record in the state family", Impl, Rocks, Fake) {
  // Components own their keys in "state"; one that scans it from the start
  // sees the store's counter too, in production and with the fake.
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  CHECK(ScanKeys(*store, Family::kState).empty());
  std::vector<Sample> three = {MakeSample(1, 1), MakeSample(2, 1), MakeSample(3, 1)};
  REQUIRE(store->AppendIncoming(three).ok());
  CHECK(ScanKeys(*store, Family::kState) == Keys{"storage/next_incoming_id"});
  CHECK(GetValue(*store, Family::kState, "storage/next_incoming_id") ==
        SampleStore::IncomingKey(4));
}

TEST_CASE_TEMPLATE("flush keeps every record readable", Impl, Rocks, Fake) {
  Impl impl;
  ManualClock clock;
  auto store = impl.Open(&clock);
  std::vector<Sample> batch;
  for (int i = 0; i < 64; ++i) batch.push_back(MakeSample(i, 1));
  REQUIRE(store->AppendIncoming(batch).ok());
  REQUIRE(store->Apply(std::vector<Mutation>{{Family::kBuffer, "b", std::string("v")}}).ok());
  CHECK(store->ApproximateMemoryBytes() > 0);
  REQUIRE(store->Flush().ok());
  CHECK(*store->CountIncoming(0) == 64);
  CHECK(store->ReadIncoming(63, 10)->size() == 1);
  CHECK(GetValue(*store, Family::kBuffer, "b") == "v");
  CHECK(store->corrupt_records() == 0);
}

// The fault injection exists only in the fake; these pin what it does.
TEST_CASE("fake: injected write failures store nothing, like a failed WriteBatch") {
  ManualClock clock;
  testing::FakeSampleStore store(&clock);
  std::vector<Sample> two = {MakeSample(1, 1), MakeSample(2, 1)};
  REQUIRE(store.AppendIncoming(two).ok());
  REQUIRE(store.Apply(std::vector<Mutation>{{Family::kState, "a", std::string("1")}}).ok());

  store.FailNextWrites(3);
  uint64_t g = store.incoming_generation();
  std::vector<Mutation> batch = {{Family::kState, "a", std::nullopt},
                                 {Family::kBuffer, "b", std::string("2")},
                                 {Family::kIncoming, SampleStore::IncomingKey(1), std::nullopt}};
  CHECK(store.Apply(batch).code() == StatusCode::kIoError);
  CHECK(GetValue(store, Family::kState, "a") == "1");
  CHECK(!GetValue(store, Family::kBuffer, "b").has_value());
  CHECK(*store.CountIncoming(0) == 2);
  CHECK(store.incoming_generation() != g);  // the real store bumps before it knows
  g = store.incoming_generation();

  // Input is validated first: a bad sample is InvalidArgument and does not
  // use up an injected failure.
  std::vector<Sample> bad = {MakeSample(3, 1)};
  bad[0].data.clear();
  CHECK(store.AppendIncoming(bad).status().code() == StatusCode::kInvalidArgument);
  CHECK(store.incoming_generation() == g);

  CHECK(store.AppendIncoming(two).status().code() == StatusCode::kIoError);
  CHECK(*store.CountIncoming(0) == 2);
  CHECK(store.PutIncoming(1, MakeSample(9, 1)).code() == StatusCode::kIoError);
  CHECK(*store.GetIncoming(1) == MakeSample(1, 1));

  // Failures used up: writes work again, and the failed append's ids stay used.
  auto r = store.AppendIncoming(two);
  REQUIRE(r.ok());
  CHECK(r->first == 5);
  CHECK(Ids(*store.ReadIncoming(0, 10)) == IdList{1, 2, 5, 6});
  REQUIRE(store.Apply(batch).ok());
  CHECK(!GetValue(store, Family::kState, "a").has_value());

  CHECK(store.flush_count() == 0);
  REQUIRE(store.Flush().ok());
  CHECK(store.flush_count() == 1);
}

}  // namespace
}  // namespace distilld::storage
