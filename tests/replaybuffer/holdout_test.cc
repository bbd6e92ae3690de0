#include <doctest/doctest.h>

#include <set>

#include "replaybuffer/replay_buffer.h"
#include "tests/support/temp_dir.h"

namespace distilld::replaybuffer {
namespace {

using storage::Sample;

Sample Labelled(int64_t index, std::optional<int64_t> label) {
  Sample s;
  s.dtype = storage::DType::kFloat32;
  s.shape = {2};
  s.data.assign(8, static_cast<char>(index));
  s.label = label;
  s.ingest_time_us = 1;
  s.request_id = std::to_string(index);
  return s;
}

std::unique_ptr<storage::SampleStore> OpenStore(const std::string& path) {
  storage::SampleStoreOptions o;
  o.path = path;
  o.sync = false;
  auto r = storage::SampleStore::Open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

std::unique_ptr<HoldoutSet> OpenHoldout(storage::SampleStore* store, HoldoutOptions o = {}) {
  auto r = HoldoutSet::Open(store, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

TEST_CASE("holdout: a stratified 10% per class, persisted, never returned for training") {
  testing::TempDir dir;
  std::set<std::string> held_ids, train_ids;
  {
    auto store = OpenStore(dir.str("db"));
    auto h = OpenHoldout(store.get());
    std::vector<Sample> batch;
    // 5 classes of very different sizes, plus unlabelled samples.
    const int sizes[] = {500, 200, 100, 50, 10};
    int index = 0;
    for (int c = 0; c < 5; ++c) {
      for (int i = 0; i < sizes[c]; ++i) batch.push_back(Labelled(index++, c));
    }
    for (int i = 0; i < 40; ++i) batch.push_back(Labelled(index++, std::nullopt));
    auto train = h->Split(batch);
    REQUIRE(train.ok());
    auto counts = h->ClassCounts();
    for (int c = 0; c < 5; ++c) CHECK(counts[c] == static_cast<uint64_t>(sizes[c] / 10));
    CHECK(h->size() == 86);
    CHECK(train->size() == batch.size() - 86);
    for (auto& s : *train) train_ids.insert(s.request_id);
    auto all = h->All();
    REQUIRE(all.ok());
    REQUIRE(all->size() == 86);
    for (auto& s : *all) {
      CHECK(s.label.has_value());
      held_ids.insert(s.request_id);
    }
    for (auto& id : held_ids) CHECK(train_ids.count(id) == 0);
    CHECK(held_ids.size() + train_ids.size() == batch.size());
  }
  auto store = OpenStore(dir.str("db"));
  auto h = OpenHoldout(store.get());
  CHECK(h->size() == 86);
  CHECK(h->ClassCounts()[0] == 50);
  std::set<std::string> reopened;
  auto reopened_all = h->All();
  REQUIRE(reopened_all.ok());
  for (auto& s : *reopened_all) reopened.insert(s.request_id);
  CHECK(reopened == held_ids);
  // The per-class denominators survived too: 100 more of class 4 (10 seen so
  // far, 1 held) bring it to 11 of 110.
  std::vector<Sample> more;
  for (int i = 0; i < 100; ++i) more.push_back(Labelled(10000 + i, 4));
  auto train = h->Split(more);
  REQUIRE(train.ok());
  CHECK(h->ClassCounts()[4] == 11);
  CHECK(train->size() == 90);
}

TEST_CASE("holdout: Split tells the caller which samples it held out and writes its records atomically") {
  testing::TempDir dir;
  std::vector<Sample> batch;
  for (int i = 0; i < 40; ++i) batch.push_back(Labelled(i, i % 2));
  batch.push_back(Labelled(40, std::nullopt));
  std::vector<bool> seen_mask;
  {
    auto store = OpenStore(dir.str("db"));
    auto h = OpenHoldout(store.get());
    auto train = h->Split(batch, [&](const std::vector<bool>& held) {
      seen_mask = held;
      std::vector<storage::Mutation> m;
      for (size_t i = 0; i < held.size(); ++i) {
        if (held[i]) m.push_back({storage::Family::kState, "test/held/" + std::to_string(i), std::string("1")});
      }
      return m;
    });
    REQUIRE(train.ok());
    REQUIRE(seen_mask.size() == batch.size());
    CHECK_FALSE(seen_mask.back());  // unlabelled: never held out
    size_t held_count = 0;
    std::set<std::string> train_ids;
    for (auto& s : *train) train_ids.insert(s.request_id);
    for (size_t i = 0; i < batch.size(); ++i) {
      // The mask agrees with what came back for training.
      CHECK(seen_mask[i] == (train_ids.count(batch[i].request_id) == 0));
      if (seen_mask[i]) ++held_count;
    }
    CHECK(held_count == h->size());
    CHECK(held_count == 4);
  }
  auto store = OpenStore(dir.str("db"));
  for (size_t i = 0; i < batch.size(); ++i) {
    auto got = store->Get(storage::Family::kState, "test/held/" + std::to_string(i));
    REQUIRE(got.ok());
    CHECK(got->has_value() == seen_mask[i]);
  }
}

TEST_CASE("holdout: max_samples bounds the set; Add validates") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  HoldoutOptions o;
  o.max_samples = 15;
  o.fraction = 0.5;
  auto h = OpenHoldout(store.get(), o);
  std::vector<Sample> batch;
  for (int i = 0; i < 100; ++i) batch.push_back(Labelled(i, i % 2));
  auto train = h->Split(batch);
  REQUIRE(train.ok());
  CHECK(h->size() == 15);
  CHECK(train->size() == 85);

  HoldoutOptions o2;
  o2.name = "manual";
  o2.max_samples = 3;
  auto m = OpenHoldout(store.get(), o2);
  std::vector<Sample> two = {Labelled(1, 7), Labelled(2, 8)};
  REQUIRE(m->Add(two).ok());
  CHECK(m->size() == 2);
  CHECK(m->ClassCounts()[7] == 1);
  CHECK(m->Add(two).code() == StatusCode::kResourceExhausted);
  std::vector<Sample> unlabelled = {Labelled(3, std::nullopt)};
  CHECK(m->Add(unlabelled).code() == StatusCode::kInvalidArgument);
  CHECK(m->size() == 2);
  CHECK(h->size() == 15);  // separate sets

  HoldoutOptions bad;
  bad.fraction = 1.5;
  CHECK(HoldoutSet::Open(store.get(), bad).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("holdout: when full, a class that arrives late takes the place of the largest class's oldest samples") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  HoldoutOptions o;
  o.max_samples = 40;
  o.fraction = 0.1;
  {
    auto h = OpenHoldout(store.get(), o);
    // Classes 0 and 1 fill the set (200 each -> 20 held out each).
    std::vector<Sample> early;
    for (int i = 0; i < 400; ++i) early.push_back(Labelled(i, i % 2));
    REQUIRE(h->Split(early).ok());
    CHECK(h->size() == 40);
    const uint64_t gen = h->generation();
    // Class 2 arrives: its share (20) is made room for, 10 from each of 0 and 1.
    std::vector<Sample> late;
    for (int i = 0; i < 200; ++i) late.push_back(Labelled(1000 + i, 2));
    auto train = h->Split(late);
    REQUIRE(train.ok());
    CHECK(h->size() == 40);
    auto counts = h->ClassCounts();
    CHECK(counts[2] >= 13);
    CHECK(counts[0] + counts[1] + counts[2] == 40);
    CHECK(counts[0] >= counts[2] - 1);
    CHECK(counts[1] >= counts[2] - 1);
    CHECK(train->size() == 200 - counts[2]);
    CHECK(h->generation() == gen + counts[2]);
    // The oldest were evicted: the first samples of class 0 are gone.
    auto all = h->All();
    REQUIRE(all.ok());
    std::set<std::string> ids;
    for (const auto& s : *all) ids.insert(s.request_id);
    CHECK(ids.count("0") == 0);
    CHECK(all->size() == 40);
  }
  // The index of keys is rebuilt on reopening: eviction goes on from there.
  auto h = OpenHoldout(store.get(), o);
  const auto before = h->ClassCounts();
  std::vector<Sample> more;
  for (int i = 0; i < 200; ++i) more.push_back(Labelled(2000 + i, 3));
  REQUIRE(h->Split(more).ok());
  auto after = h->ClassCounts();
  CHECK(after[3] >= 8);
  CHECK(h->size() == 40);
  auto all = h->All();
  REQUIRE(all.ok());
  CHECK(all->size() == 40);
}

}  // namespace
}  // namespace distilld::replaybuffer
