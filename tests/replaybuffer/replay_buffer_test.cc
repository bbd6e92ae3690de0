#include "replaybuffer/replay_buffer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "tests/support/temp_dir.h"

namespace distilld::replaybuffer {
namespace {

using storage::Sample;

// A small sample whose request_id carries its arrival index.
Sample Item(int64_t index, std::optional<int64_t> label = std::nullopt, size_t bytes = 4) {
  Sample s;
  s.dtype = storage::DType::kUInt8;
  s.shape = {static_cast<int64_t>(bytes)};
  s.data.assign(bytes, static_cast<char>(index));
  s.label = label;
  s.ingest_time_us = 1;
  s.request_id = std::to_string(index);
  return s;
}

int64_t IndexOf(const Sample& s) { return std::stoll(s.request_id); }

std::unique_ptr<storage::SampleStore> OpenStore(const std::string& path) {
  storage::SampleStoreOptions o;
  o.path = path;
  o.sync = false;  // durability is the crash test's subject; keep these fast
  auto r = storage::SampleStore::Open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

std::unique_ptr<ReplayBuffer> OpenBuffer(storage::SampleStore* store, ReplayBufferOptions o) {
  auto r = ReplayBuffer::Open(store, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

std::vector<Sample> All(ReplayBuffer& b) {
  std::mt19937_64 rng(0);
  return *b.Sample(b.Stats().size + 1, rng);
}

// Pearson's statistic of observed counts against one common expectation.
double ChiSquare(const std::vector<double>& observed, double expected) {
  double x = 0;
  for (double o : observed) x += (o - expected) * (o - expected) / expected;
  return x;
}

TEST_CASE("reservoir: size, seen, and an unbiased sample of the whole stream") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  constexpr int kCap = 50, kStream = 500, kTrials = 200, kBatch = 25;
  std::mt19937_64 rng(20261128);
  std::vector<double> per_item(kStream, 0), per_decile(10, 0);
  for (int t = 0; t < kTrials; ++t) {
    ReplayBufferOptions o;
    o.capacity = kCap;
    o.policy = Policy::kReservoir;
    o.name = "trial" + std::to_string(t);
    auto buf = OpenBuffer(store.get(), o);
    for (int b = 0; b < kStream; b += kBatch) {
      std::vector<Sample> batch;
      for (int i = b; i < b + kBatch; ++i) batch.push_back(Item(i));
      REQUIRE(buf->Offer(batch, rng).ok());
      BufferStats st = buf->Stats();
      CHECK(st.seen == static_cast<uint64_t>(b + kBatch));
      CHECK(st.size == std::min<uint64_t>(kCap, b + kBatch));
    }
    auto all = All(*buf);
    REQUIRE(all.size() == kCap);
    std::set<int64_t> distinct;
    for (auto& s : all) {
      distinct.insert(IndexOf(s));
      per_item[IndexOf(s)] += 1;
      per_decile[IndexOf(s) * 10 / kStream] += 1;
    }
    CHECK(distinct.size() == kCap);
  }
  // Every item is kept with probability cap/stream. Deciles of arrival order
  // catch a bias towards old or new items (df = 9; 33.7 is the 1e-4 tail);
  // items catch a lumpy one (df = 499; mean 499, sd 31.6, bound at +5 sd).
  double decile_chi = ChiSquare(per_decile, double(kTrials) * kCap / 10);
  double item_chi = ChiSquare(per_item, double(kTrials) * kCap / kStream);
  MESSAGE("chi-square deciles " << decile_chi << ", items " << item_chi);
  CHECK(decile_chi < 33.7);
  CHECK(item_chi < 657);

  // The same statistic on a sampler that admits with 1.5 x cap/seen (a
  // plausible bug) fails the bound: the test has the power to notice.
  std::mt19937_64 brng(7);
  std::vector<double> biased(10, 0);
  for (int t = 0; t < kTrials; ++t) {
    std::vector<int> r;
    for (int i = 0; i < kStream; ++i) {
      if (r.size() < kCap) {
        r.push_back(i);
      } else if (std::uniform_real_distribution<double>(0, 1)(brng) < 1.5 * kCap / (i + 1)) {
        r[brng() % kCap] = i;
      }
    }
    for (int i : r) biased[i * 10 / kStream] += 1;
  }
  double biased_chi = ChiSquare(biased, double(kTrials) * kCap / 10);
  MESSAGE("chi-square of the 1.5x biased reference sampler: " << biased_chi);
  CHECK(biased_chi > 33.7);
}

TEST_CASE("Sample(n): min(n, size), no repeats, uniform") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  ReplayBufferOptions o;
  o.capacity = 100;
  o.policy = Policy::kReservoir;
  auto buf = OpenBuffer(store.get(), o);
  std::mt19937_64 rng(1);
  std::mt19937_64 empty_rng(1);
  CHECK(buf->Sample(5, empty_rng)->empty());
  std::vector<Sample> batch;
  for (int i = 0; i < 100; ++i) batch.push_back(Item(i));
  REQUIRE(buf->Offer(batch, rng).ok());
  CHECK(buf->Sample(500, rng)->size() == 100);
  std::vector<double> counts(100, 0);
  for (int k = 0; k < 5000; ++k) {
    auto s = *buf->Sample(10, rng);
    REQUIRE(s.size() == 10);
    std::set<int64_t> ids;
    for (auto& x : s) {
      ids.insert(IndexOf(x));
      counts[IndexOf(x)] += 1;
    }
    CHECK(ids.size() == 10);
  }
  // df = 99: mean 99, sd 14; bound at +5 sd.
  CHECK(ChiSquare(counts, 500) < 170);
}

TEST_CASE("class-balanced: equal shares, new classes shrink the others, predicted classes") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  ReplayBufferOptions o;
  o.capacity = 100;
  o.policy = Policy::kClassBalanced;
  auto buf = OpenBuffer(store.get(), o);
  std::mt19937_64 rng(3);
  // Class 0 is 60% of the stream, classes 1..4 10% each.
  std::vector<Sample> stream;
  for (int i = 0; i < 2000; ++i) {
    int r = i % 10;
    stream.push_back(Item(i, r < 6 ? 0 : r - 5));
  }
  for (size_t b = 0; b < stream.size(); b += 100) {
    REQUIRE(buf->Offer(std::span(stream).subspan(b, 100), rng).ok());
  }
  BufferStats st = buf->Stats();
  CHECK(st.size == 100);
  CHECK(st.seen == 2000);
  for (int c = 0; c < 5; ++c) CHECK(st.class_counts[c] == 20);
  CHECK(st.class_seen[0] == 1200);
  CHECK(st.class_seen[3] == 200);

  // Class 0 keeps a uniform sample of its own 1200: both halves are present.
  int early = 0;
  for (auto& s : All(*buf)) {
    if (s.label == 0 && IndexOf(s) < 1000) ++early;
  }
  CHECK(early > 3);
  CHECK(early < 17);

  // A sixth class: 100/6 -> classes 0..3 keep 17, classes 4 and 5 get 16.
  std::vector<Sample> six;
  for (int i = 0; i < 40; ++i) six.push_back(Item(5000 + i, 5));
  REQUIRE(buf->Offer(six, rng).ok());
  st = buf->Stats();
  CHECK(st.size == 100);
  for (int c = 0; c < 4; ++c) CHECK(st.class_counts[c] == 17);
  CHECK(st.class_counts[4] == 16);
  CHECK(st.class_counts[5] == 16);

  // Unlabelled samples are filed under the teacher's predicted class.
  Sample predicted = Item(9000);
  predicted.teacher_logits = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 9.f};
  std::vector<Sample> one = {predicted};
  REQUIRE(buf->Offer(one, rng).ok());
  st = buf->Stats();
  CHECK(st.class_seen[6] == 1);
  CHECK(st.class_counts[6] == 1);
  CHECK(st.size <= 100);

  // No class at all: refused, and nothing changes.
  std::vector<Sample> bad = {Item(9001, 1), Item(9002)};
  Status s = buf->Offer(bad, rng);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(buf->Stats().seen == st.seen);
  CHECK(buf->Stats().class_counts == st.class_counts);
}

TEST_CASE("reservoir accepts samples without a class") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  ReplayBufferOptions o;
  o.capacity = 10;
  o.policy = Policy::kReservoir;
  auto buf = OpenBuffer(store.get(), o);
  std::mt19937_64 rng(4);
  std::vector<Sample> batch = {Item(1), Item(2, 3)};
  REQUIRE(buf->Offer(batch, rng).ok());
  BufferStats st = buf->Stats();
  CHECK(st.class_counts[-1] == 1);
  CHECK(st.class_counts[3] == 1);
  CHECK(st.class_seen[-1] == 1);
}

TEST_CASE("byte cap: never exceeded; a sample larger than the cap is not kept") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  // Indices 10..99 all have two digits, so these samples encode to equal sizes.
  const uint64_t one = storage::EncodeSample(Item(10, 0, 100))->size();
  ReplayBufferOptions o;
  o.capacity = 100;
  o.max_bytes = 10 * one + one / 2;
  o.policy = Policy::kReservoir;
  auto buf = OpenBuffer(store.get(), o);
  std::mt19937_64 rng(5);
  std::vector<Sample> batch;
  for (int i = 10; i < 60; ++i) batch.push_back(Item(i, 0, 100));
  REQUIRE(buf->Offer(batch, rng).ok());
  BufferStats st = buf->Stats();
  CHECK(st.size == 10);
  CHECK(st.bytes == 10 * one);
  CHECK(st.bytes <= o.max_bytes);

  // Mixed sizes: the cap holds after every Offer.
  for (int k = 0; k < 20; ++k) {
    std::vector<Sample> mixed;
    for (int i = 0; i < 5; ++i) mixed.push_back(Item(100 + k * 5 + i, 0, 20 + rng() % 400));
    REQUIRE(buf->Offer(mixed, rng).ok());
    CHECK(buf->Stats().bytes <= o.max_bytes);
  }
  // Larger than the cap by itself: counted as seen, never admitted.
  uint64_t seen = buf->Stats().seen;
  std::vector<Sample> huge = {Item(999, 0, o.max_bytes + 1)};
  REQUIRE(buf->Offer(huge, rng).ok());
  CHECK(buf->Stats().seen == seen + 1);
  for (auto& s : All(*buf)) CHECK(IndexOf(s) != 999);

  // The byte cap also holds under the class-balanced policy.
  ReplayBufferOptions cb = o;
  cb.policy = Policy::kClassBalanced;
  cb.name = "balanced";
  auto bal = OpenBuffer(store.get(), cb);
  std::vector<Sample> labelled;
  for (int i = 0; i < 60; ++i) labelled.push_back(Item(i, i % 3, 100));
  REQUIRE(bal->Offer(labelled, rng).ok());
  CHECK(bal->Stats().bytes <= cb.max_bytes);
  CHECK(bal->Stats().size == 10);
}

TEST_CASE("class-balanced: a new class shrinks the others even if its sample is too big") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  ReplayBufferOptions o;
  o.capacity = 10;
  o.max_bytes = 1000;
  o.policy = Policy::kClassBalanced;
  auto buf = OpenBuffer(store.get(), o);
  std::mt19937_64 rng(12);
  std::vector<Sample> zeros;
  for (int i = 10; i < 30; ++i) zeros.push_back(Item(i, 0, 10));
  REQUIRE(buf->Offer(zeros, rng).ok());
  CHECK(buf->Stats().class_counts[0] == 10);
  std::vector<Sample> big = {Item(99, 1, 2000)};
  REQUIRE(buf->Offer(big, rng).ok());
  BufferStats st = buf->Stats();
  CHECK(st.class_counts[0] == 5);
  CHECK(st.class_counts.count(1) == 0);
  CHECK(st.class_seen[1] == 1);
  // Class 1's half stays free for its later samples.
  std::vector<Sample> ones;
  for (int i = 40; i < 50; ++i) ones.push_back(Item(i, 1, 10));
  REQUIRE(buf->Offer(ones, rng).ok());
  st = buf->Stats();
  CHECK(st.class_counts[0] == 5);
  CHECK(st.class_counts[1] == 5);
  CHECK(st.size == 10);
}

// Runs the same offers on a buffer that is closed and reopened (with its store)
// after every batch and on one that stays open; both must agree exactly.
void CheckReopenEqualsInMemory(Policy policy) {
  testing::TempDir dir;
  ReplayBufferOptions o;
  o.capacity = 40;
  o.policy = policy;
  std::mt19937_64 rng_a(11), rng_b(11);
  auto store_b = OpenStore(dir.str("b"));
  auto buf_b = OpenBuffer(store_b.get(), o);
  for (int b = 0; b < 12; ++b) {
    std::vector<Sample> batch;
    for (int i = 0; i < 15; ++i) batch.push_back(Item(b * 100 + i, (b * 7 + i) % (2 + b / 3)));
    {
      auto store_a = OpenStore(dir.str("a"));
      auto buf_a = OpenBuffer(store_a.get(), o);
      REQUIRE(buf_a->Offer(batch, rng_a).ok());
    }
    REQUIRE(buf_b->Offer(batch, rng_b).ok());
  }
  auto store_a = OpenStore(dir.str("a"));
  auto buf_a = OpenBuffer(store_a.get(), o);
  BufferStats sa = buf_a->Stats(), sb = buf_b->Stats();
  CHECK(sa.size == sb.size);
  CHECK(sa.bytes == sb.bytes);
  CHECK(sa.seen == sb.seen);
  CHECK(sa.seen == 12 * 15);
  CHECK(sa.class_counts == sb.class_counts);
  CHECK(sa.class_seen == sb.class_seen);
  CHECK(All(*buf_a) == All(*buf_b));  // same samples, in the same slots
  // Sampling with equal seeds gives equal draws.
  std::mt19937_64 r1(5), r2(5);
  CHECK(*buf_a->Sample(13, r1) == *buf_b->Sample(13, r2));
}

TEST_CASE("a reopened buffer equals the one that stayed in memory") {
  SUBCASE("reservoir") { CheckReopenEqualsInMemory(Policy::kReservoir); }
  SUBCASE("class-balanced") { CheckReopenEqualsInMemory(Policy::kClassBalanced); }
}

TEST_CASE("a failed Offer changes nothing, in memory or on disk") {
  testing::TempDir dir;
  ReplayBufferOptions o;
  o.capacity = 10;
  o.policy = Policy::kReservoir;
  std::mt19937_64 rng(6);
  BufferStats before;
  std::vector<Sample> contents;
  {
    auto store = OpenStore(dir.str("db"));
    auto buf = OpenBuffer(store.get(), o);
    std::vector<Sample> batch;
    for (int i = 0; i < 8; ++i) batch.push_back(Item(i, 1));
    REQUIRE(buf->Offer(batch, rng).ok());
    before = buf->Stats();
    contents = All(*buf);
    std::vector<Sample> bad = {Item(50, 1), Item(51, 1), Item(52, 1)};
    bad[2].data.push_back('x');  // does not match its shape
    CHECK(buf->Offer(bad, rng).code() == StatusCode::kInvalidArgument);
    CHECK(buf->Stats().seen == before.seen);
    CHECK(All(*buf) == contents);
  }
  auto store = OpenStore(dir.str("db"));
  auto buf = OpenBuffer(store.get(), o);
  CHECK(buf->Stats().seen == before.seen);
  CHECK(All(*buf) == contents);
}

TEST_CASE("Offer writes the caller's records in the same atomic batch, or none of them") {
  testing::TempDir dir;
  ReplayBufferOptions o;
  o.capacity = 10;
  o.policy = Policy::kReservoir;
  std::mt19937_64 rng(7);
  {
    auto store = OpenStore(dir.str("db"));
    auto buf = OpenBuffer(store.get(), o);
    std::vector<storage::Mutation> also = {{storage::Family::kState, "test/cursor", std::string("5")},
                                           {storage::Family::kState, "test/gone", std::nullopt}};
    REQUIRE(store->Apply(std::vector<storage::Mutation>{{storage::Family::kState, "test/gone", "x"}}).ok());
    std::vector<Sample> batch = {Item(0, 1), Item(1, 2)};
    REQUIRE(buf->Offer(batch, rng, also).ok());
    CHECK(**store->Get(storage::Family::kState, "test/cursor") == "5");
    CHECK_FALSE(store->Get(storage::Family::kState, "test/gone")->has_value());

    // A refused offer writes none of the caller's records either.
    std::vector<Sample> bad = {Item(2, 1)};
    bad[0].data.push_back('x');
    std::vector<storage::Mutation> also2 = {{storage::Family::kState, "test/cursor", std::string("9")}};
    CHECK(buf->Offer(bad, rng, also2).code() == StatusCode::kInvalidArgument);
    CHECK(**store->Get(storage::Family::kState, "test/cursor") == "5");
    CHECK(buf->Stats().seen == 2);
  }
  auto store = OpenStore(dir.str("db"));
  auto buf = OpenBuffer(store.get(), o);
  CHECK(buf->Stats().seen == 2);
  CHECK(**store->Get(storage::Family::kState, "test/cursor") == "5");
}

TEST_CASE("a corrupt record is skipped on open and the buffer repaired") {
  testing::TempDir dir;
  ReplayBufferOptions o;
  o.capacity = 10;
  o.policy = Policy::kReservoir;
  std::mt19937_64 rng(7);
  {
    auto store = OpenStore(dir.str("db"));
    auto buf = OpenBuffer(store.get(), o);
    std::vector<Sample> batch;
    for (int i = 0; i < 10; ++i) batch.push_back(Item(i));
    REQUIRE(buf->Offer(batch, rng).ok());
    // Overwrite the third record of the buffer with garbage.
    std::string third;
    int n = 0;
    REQUIRE(store->Scan(storage::Family::kBuffer, "replay/", [&](std::string_view k, std::string_view) {
                   if (n++ == 2) third = std::string(k);
                   return n < 3;
                 }).ok());
    REQUIRE(!third.empty());
    std::vector<storage::Mutation> m = {{storage::Family::kBuffer, third, "\x01\x02garbage"}};
    REQUIRE(store->Apply(m).ok());
  }
  auto store = OpenStore(dir.str("db"));
  auto buf = OpenBuffer(store.get(), o);
  CHECK(buf->Stats().size == 9);
  CHECK(buf->Stats().seen == 10);
  auto after_repair = All(*buf);
  std::vector<Sample> more = {Item(20), Item(21)};
  REQUIRE(buf->Offer(more, rng).ok());
  auto contents = All(*buf);
  buf.reset();
  buf = OpenBuffer(store.get(), o);  // clean now: the same contents
  CHECK(All(*buf) == contents);
  CHECK(buf->Stats().size == 10);
}

TEST_CASE("reopening with a smaller capacity trims and persists") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  ReplayBufferOptions o;
  o.capacity = 30;
  o.policy = Policy::kClassBalanced;
  std::mt19937_64 rng(8);
  {
    auto buf = OpenBuffer(store.get(), o);
    std::vector<Sample> batch;
    for (int i = 0; i < 60; ++i) batch.push_back(Item(i, i % 3));
    REQUIRE(buf->Offer(batch, rng).ok());
    CHECK(buf->Stats().size == 30);
  }
  o.capacity = 12;
  auto buf = OpenBuffer(store.get(), o);
  BufferStats st = buf->Stats();
  CHECK(st.size == 12);
  for (int c = 0; c < 3; ++c) CHECK(st.class_counts[c] == 4);
  auto contents = All(*buf);
  buf.reset();
  buf = OpenBuffer(store.get(), o);
  CHECK(All(*buf) == contents);
}

TEST_CASE("options are validated and named buffers are independent") {
  testing::TempDir dir;
  auto store = OpenStore(dir.str("db"));
  ReplayBufferOptions o;
  o.name = "a/b";
  CHECK(ReplayBuffer::Open(store.get(), o).status().code() == StatusCode::kInvalidArgument);
  CHECK(ReplayBuffer::Open(nullptr, ReplayBufferOptions{}).status().code() ==
        StatusCode::kInvalidArgument);
  ReplayBufferOptions a, ab;
  a.name = "r";
  ab.name = "r2";  // shares a prefix with "r" but not "r/"
  auto ba = OpenBuffer(store.get(), a);
  auto bb = OpenBuffer(store.get(), ab);
  std::mt19937_64 rng(9);
  std::vector<Sample> batch = {Item(1, 1), Item(2, 2)};
  REQUIRE(ba->Offer(batch, rng).ok());
  CHECK(bb->Stats().size == 0);
  bb.reset();
  bb = OpenBuffer(store.get(), ab);
  CHECK(bb->Stats().size == 0);
  ba.reset();
  ba = OpenBuffer(store.get(), a);
  CHECK(ba->Stats().size == 2);
}

}  // namespace
}  // namespace distilld::replaybuffer
