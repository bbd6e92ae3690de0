// SampleStore: the durable home of samples, on RocksDB.
//
// Column families:
//   incoming  samples not yet consumed by the learner, keyed by SampleId
//             (big-endian u64, so iteration order is arrival order)
//   buffer    replay buffer contents (keys owned by replaybuffer/)
//   holdout   held-out evaluation samples (keys owned by replaybuffer/)
//   state     small records: counters, cursors (keys owned by their writers)
//
// Durability: every acknowledged write is synced to the WAL before the call
// returns (WriteOptions::sync = true). RocksDB groups concurrent writers into
// one WAL write and one fsync, so concurrent batches share a sync (group
// commit) and none returns before its own sync.
//
// Thread-safety: all methods may be called concurrently. The store owns the
// RocksDB handle; callers own what they pass in and get back.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/free_space.h"
#include "storage/sample.h"

namespace distilld::storage {

using SampleId = uint64_t;

enum class Family { kIncoming = 0, kBuffer = 1, kHoldout = 2, kState = 3 };

struct SampleStoreOptions {
  // Directory of the RocksDB database; created if missing. Required.
  std::string path;
  // LRU block cache shared by all families. Default 16 MiB; raise it on
  // machines with memory to spare and large buffers.
  size_t block_cache_bytes = 16u << 20;
  // Memtable size per family. Default 8 MiB, with at most 2 per family, which
  // keeps RocksDB under ~64 MiB in total with the cache.
  size_t write_buffer_bytes = 8u << 20;
  int max_write_buffer_number = 2;
  // fsync the WAL before acknowledging a write. Only tests and benchmarks
  // that measure the cost of durability turn it off.
  bool sync = true;
  // Wall clock for ingest times; not owned; default Clock::Real().
  Clock* clock = nullptr;
  // Writes are refused with ResourceExhausted while they would go below
  // this floor (storage/free_space.h: on a full disk RocksDB aborts instead
  // of failing the write). Not owned; must outlive the store. Default none;
  // the daemon always passes one (storage.min_free_mb).
  const FreeSpaceFloor* free_space = nullptr;
};

// One change in an atomic Apply(): a put when value is set, else a delete.
struct Mutation {
  Family family;
  std::string key;
  std::optional<std::string> value;
};

struct IdRange {
  SampleId first = 0;
  SampleId last = 0;  // inclusive
};

struct StoredSample {
  SampleId id;
  Sample sample;
};

class SampleStore {
 public:
  static Result<std::unique_ptr<SampleStore>> Open(const SampleStoreOptions& options);
  virtual ~SampleStore() = default;

  // Appends samples to "incoming" in one atomic, durable write and assigns
  // consecutive ids. Samples with ingest_time_us == 0 get the clock's time.
  // InvalidArgument (naming the index) if any sample fails to encode; then
  // nothing is stored.
  virtual Result<IdRange> AppendIncoming(std::span<const Sample> samples) = 0;

  // Up to max_count incoming samples with id > after_id, in id order.
  // Unreadable records are skipped, logged, and counted in corrupt_records().
  virtual Result<std::vector<StoredSample>> ReadIncoming(SampleId after_id, size_t max_count) = 0;
  virtual Result<Sample> GetIncoming(SampleId id) = 0;
  // Replaces one incoming sample (e.g. to attach a label from feedback).
  virtual Status PutIncoming(SampleId id, const Sample& sample) = 0;
  // Number of samples in "incoming" with id > after_id (approximate is not
  // allowed: it is exact, by iteration over keys only).
  virtual Result<uint64_t> CountIncoming(SampleId after_id) = 0;
  // Number of samples in "incoming" (records with a SampleId key, readable
  // or not), without reading RocksDB: counted once by Open, so it survives a
  // restart, then kept by every write that adds or removes one; a put over an
  // existing id and a delete of a missing one leave it unchanged. Exact: each
  // write's change is added once the write is stored, so a call that races a
  // write sees the count from before or after it. Unlike CountIncoming(0) it
  // includes stored records the cursor readers do not see yet: those after an
  // append still in flight, and records put past the last assigned id.
  virtual uint64_t IncomingCount() const = 0;
  // Changes after every write to "incoming" (append, put, or an Apply that
  // touches it), and only then. CountIncoming iterates every pending sample,
  // so a poller that read the generation before counting may reuse its count
  // while the generation stays the same.
  virtual uint64_t incoming_generation() const = 0;

  // Raw access for components that own their keys (replaybuffer/, learner/).
  // A batch that puts or deletes incoming samples also looks those keys up,
  // to keep IncomingCount, and is not written concurrently with another such
  // batch (appends still share WAL syncs with it and with each other).
  virtual Status Apply(std::span<const Mutation> mutations) = 0;
  virtual Result<std::optional<std::string>> Get(Family family, std::string_view key) = 0;
  // Calls fn(key, value) for each record with key >= start in key order until
  // fn returns false.
  virtual Status Scan(Family family, std::string_view start,
                      const std::function<bool(std::string_view, std::string_view)>& fn) = 0;

  // Helpers for the Mutation batch of the typed incoming family.
  static std::string IncomingKey(SampleId id);

  // Records skipped because they could not be decoded, since Open().
  virtual uint64_t corrupt_records() const = 0;
  // Approximate memory used by RocksDB (memtables + block cache + readers).
  virtual uint64_t ApproximateMemoryBytes() = 0;
  // Flushes memtables to SST files (used at shutdown; the WAL already holds
  // every acknowledged write).
  virtual Status Flush() = 0;

  // Synced writes and WAL fsyncs since Open(). With concurrent writers the
  // second is smaller than the first: that is the group commit at work.
  // For metrics and benchmarks; both are 0 when options.sync is false.
  struct SyncCounters {
    uint64_t synced_writes = 0;
    uint64_t wal_syncs = 0;
  };
  virtual SyncCounters sync_counters() const { return {}; }
};

}  // namespace distilld::storage
