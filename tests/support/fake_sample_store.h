// An in-memory storage::SampleStore for unit tests.
//
// Fast unit tests may use it instead of RocksDB because it passes the same
// contract tests as the real store (tests/storage/sample_store_contract_*.cc).
// Behaviour that a unit test can observe through the SampleStore interface
// matches the real store; durability (fsync, reopen) and RocksDB tuning do not
// exist here and stay covered by the RocksDB tests.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/sample_store.h"

namespace distilld::testing {

// SampleStore over one std::map per family, ordered bytewise like RocksDB's
// default comparator, so keys, ids and Scan order are those of the real store.
//
// Thread-safety: every method may be called concurrently; one mutex guards all
// state. Scan copies the matching records under the mutex and calls fn without
// it, which gives fn the snapshot a RocksDB iterator gives and lets fn call
// back into the store. Ownership: the store owns its records; the clock is not
// owned and must outlive the store.
class FakeSampleStore final : public storage::SampleStore {
 public:
  // clock: ingest time for samples without one; nullptr means Clock::Real().
  explicit FakeSampleStore(Clock* clock = nullptr);
  ~FakeSampleStore() override = default;
  FakeSampleStore(const FakeSampleStore&) = delete;
  FakeSampleStore& operator=(const FakeSampleStore&) = delete;

  Result<storage::IdRange> AppendIncoming(std::span<const storage::Sample> samples) override;
  Result<std::vector<storage::StoredSample>> ReadIncoming(storage::SampleId after_id,
                                                          size_t max_count) override;
  Result<storage::Sample> GetIncoming(storage::SampleId id) override;
  Status PutIncoming(storage::SampleId id, const storage::Sample& sample) override;
  Result<uint64_t> CountIncoming(storage::SampleId after_id) override;
  uint64_t IncomingCount() const override;
  uint64_t incoming_generation() const override;

  Status Apply(std::span<const storage::Mutation> mutations) override;
  Result<std::optional<std::string>> Get(storage::Family family, std::string_view key) override;
  Status Scan(storage::Family family, std::string_view start,
              const std::function<bool(std::string_view, std::string_view)>& fn) override;

  uint64_t corrupt_records() const override;
  // Bytes of keys and values held: the fake has no caches or memtables.
  uint64_t ApproximateMemoryBytes() override;
  // Nothing to flush; counted so a test can check that shutdown flushed.
  Status Flush() override;

  // Fault injection: the next `count` calls of AppendIncoming, PutIncoming
  // and Apply fail with IoError after validating their input. A failed call
  // stores nothing, as a failed RocksDB WriteBatch does, but still uses up
  // the ids it reserved and still changes incoming_generation(), because the
  // real store does both before it learns the write failed.
  void FailNextWrites(int count);
  // Test hook, run at the start of every Apply before the store's lock: to
  // hold a write back as a RocksDB write stall does. Set it while no write
  // runs; empty = none.
  void SetBeforeApply(std::function<void()> hook);
  // Flush() calls since construction.
  int flush_count() const;

 private:
  // std::less<> lets lookups take a string_view without building a string.
  using Records = std::map<std::string, std::string, std::less<>>;

  Records& FamilyLocked(storage::Family family);
  // True (and one fewer pending failure) if this write is to fail.
  bool TakeFailureLocked();
  // Mirrors the real store: ids at or above this are hidden from the cursor
  // readers. The fake has no appends in flight, so it is the next id.
  storage::SampleId VisibleLimitLocked() const { return next_id_; }
  void CountCorruptLocked(const std::string& what);

  Clock* const clock_;
  mutable std::mutex mu_;
  std::array<Records, 4> families_;   // indexed by Family; guarded by mu_
  storage::SampleId next_id_ = 1;     // guarded by mu_
  uint64_t incoming_count_ = 0;       // records with 8-byte keys in "incoming"; guarded by mu_
  uint64_t incoming_generation_ = 0;  // guarded by mu_
  uint64_t corrupt_ = 0;              // guarded by mu_
  int failures_pending_ = 0;          // guarded by mu_
  int flushes_ = 0;                   // guarded by mu_
  std::function<void()> before_apply_;  // set while no write runs
};

// The fake behind the interface, for code that only needs a SampleStore.
std::unique_ptr<storage::SampleStore> NewFakeSampleStore(Clock* clock = nullptr);

}  // namespace distilld::testing
