// The buffer's and the holdout set's readers while one of their writes is held
// back in the store, as RocksDB holds a write in a stall: GET /v1/learner reads
// Stats(), size() and ClassCounts(), and must answer meanwhile (the soak found
// a status read waiting 55 s behind a round's write).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "replaybuffer/replay_buffer.h"
#include "tests/support/fake_sample_store.h"
#include "tests/support/test_samples.h"

namespace distilld::replaybuffer {
namespace {

using namespace std::chrono_literals;

// testing::MakeSample(tag) is labelled tag % 10.
using testing::MakeSample;

// Holds the first Apply after Arm() until Release().
class WriteStall {
 public:
  explicit WriteStall(testing::FakeSampleStore* store) : store_(store) {}
  ~WriteStall() { Release(); }
  void Arm() {
    store_->SetBeforeApply([this] {
      if (armed_.exchange(false)) {
        entered_.set_value();
        released_.wait();
      }
    });
    armed_ = true;
  }
  void WaitEntered() { REQUIRE(entered_future_.wait_for(10s) == std::future_status::ready); }
  void Release() {
    if (!released_set_) {
      released_set_ = true;
      release_.set_value();
    }
  }

 private:
  testing::FakeSampleStore* store_;
  std::atomic<bool> armed_{false};
  std::promise<void> entered_;
  std::future<void> entered_future_ = entered_.get_future();
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  bool released_set_ = false;
};

TEST_CASE("replay buffer: Stats and Sample answer while an Offer is held up in the store") {
  testing::FakeSampleStore store;
  ReplayBufferOptions o;
  o.capacity = 8;
  auto opened = ReplayBuffer::Open(&store, o);
  REQUIRE(opened.ok());
  ReplayBuffer& buffer = **opened;
  std::vector<storage::Sample> first = {MakeSample(10), MakeSample(11)};
  std::mt19937_64 rng(1);
  REQUIRE(buffer.Offer(first, rng).ok());

  WriteStall stall(&store);
  stall.Arm();
  std::vector<storage::Sample> more = {MakeSample(20), MakeSample(21), MakeSample(12)};
  std::mt19937_64 writer_rng(2);
  std::future<Status> offer = std::async(std::launch::async, [&] { return buffer.Offer(more, writer_rng); });
  stall.WaitEntered();

  std::future<BufferStats> stats = std::async(std::launch::async, [&] { return buffer.Stats(); });
  const bool stats_answered = stats.wait_for(5s) == std::future_status::ready;
  std::mt19937_64 reader_rng(3);
  auto sampled = std::async(std::launch::async, [&] { return buffer.Sample(8, reader_rng); });
  const bool sample_answered = sampled.wait_for(5s) == std::future_status::ready;
  // Released before any assertion: a reader blocked by the write would
  // otherwise keep its future, and the test, from ever finishing.
  stall.Release();
  CHECK(stats_answered);
  CHECK(sample_answered);
  if (stats_answered) CHECK(stats.get().size == 2);  // the held write is not visible yet
  if (sample_answered) CHECK(sampled.get()->size() == 2);
  REQUIRE(offer.get().ok());
  CHECK(buffer.Stats().size == 5);
  CHECK(buffer.Stats().class_counts.at(2) == 1);
}

TEST_CASE("holdout set: size and ClassCounts answer while a Split is held up in the store") {
  testing::FakeSampleStore store;
  HoldoutOptions o;
  o.fraction = 1.0;  // every labelled sample is held out
  auto opened = HoldoutSet::Open(&store, o);
  REQUIRE(opened.ok());
  HoldoutSet& holdout = **opened;
  REQUIRE(holdout.Split({MakeSample(10)}).ok());

  WriteStall stall(&store);
  stall.Arm();
  auto split = std::async(std::launch::async, [&] { return holdout.Split({MakeSample(11), MakeSample(21)}); });
  stall.WaitEntered();

  auto size = std::async(std::launch::async, [&] { return holdout.size(); });
  const bool size_answered = size.wait_for(5s) == std::future_status::ready;
  auto counts = std::async(std::launch::async, [&] { return holdout.ClassCounts(); });
  const bool counts_answered = counts.wait_for(5s) == std::future_status::ready;
  stall.Release();  // before any assertion, as above
  CHECK(size_answered);
  CHECK(counts_answered);
  if (size_answered) CHECK(size.get() == 1);
  if (counts_answered) CHECK(counts.get().count(1) == 0);

  auto train = split.get();
  REQUIRE(train.ok());
  CHECK(train->empty());
  CHECK(holdout.size() == 3);
  CHECK(holdout.ClassCounts().at(1) == 2);
}

}  // namespace
}  // namespace distilld::replaybuffer
