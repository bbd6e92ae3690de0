#include "storage/sample_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/statistics.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <iterator>
#include <map>
#include <mutex>

#include "common/log.h"
#include "storage/coding.h"
#include "storage/sample_internal.h"

namespace distilld::storage {
namespace {

// The next-id counter lives in "state" and is written with Merge(max) in the
// same WriteBatch as the samples. Concurrent appenders reserve ids in one order
// but may reach RocksDB in another; max() makes the stored counter correct
// regardless of the order their batches commit in.
constexpr char kNextIdKey[] = "storage/next_incoming_id";

class MaxU64Operator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice& /*key*/, const rocksdb::Slice* existing,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger* /*logger*/) const override {
    uint64_t a = existing != nullptr && existing->size() == 8
                     ? coding::GetBigEndian64({existing->data(), 8})
                     : 0;
    uint64_t b = value.size() == 8 ? coding::GetBigEndian64({value.data(), 8}) : 0;
    new_value->clear();
    coding::PutBigEndian64(new_value, std::max(a, b));
    return true;
  }
  const char* Name() const override { return "distilld.MaxU64"; }
};

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string m = std::string(what) + ": " + s.ToString();
  if (s.IsNotFound()) return Status::NotFound(m);
  if (s.IsCorruption()) return Status::Corruption(m);
  if (s.IsIOError()) return Status::IoError(m);
  if (s.IsInvalidArgument()) return Status::InvalidArgument(m);
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return Status::Unavailable(m);
  return Status::Internal(m);
}

// Scans read each record once (the learner's cursor, a buffer restore);
// keeping their blocks would only push hot index blocks out of the cache and
// grow resident memory by the cache size.
rocksdb::ReadOptions ScanOptions() {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  return ro;
}

const char* const kFamilyNames[] = {"incoming", "buffer", "holdout", "state"};

std::string BigEndian(uint64_t v) {
  std::string s;
  coding::PutBigEndian64(&s, v);
  return s;
}

// Sample records (8-byte keys) in "incoming" with first <= id < end; every
// one from `first` when end is 0.
Result<uint64_t> CountSampleKeys(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* incoming,
                                 SampleId first, SampleId end) {
  rocksdb::ReadOptions ro = ScanOptions();
  std::string upper = BigEndian(end);
  rocksdb::Slice upper_slice(upper);
  if (end != 0) ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, incoming));
  uint64_t n = 0;
  for (it->Seek(BigEndian(first)); it->Valid(); it->Next()) {
    if (it->key().size() == 8) ++n;
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "count incoming"));
  return n;
}

class RocksSampleStore final : public SampleStore {
 public:
  RocksSampleStore(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
                   std::shared_ptr<rocksdb::Cache> cache,
                   std::shared_ptr<rocksdb::Statistics> stats, const SampleStoreOptions& options,
                   SampleId next_id, uint64_t incoming_count)
      : db_(db), handles_(std::move(handles)), cache_(std::move(cache)), stats_(std::move(stats)),
        clock_(options.clock), floor_(options.free_space),
        incoming_count_(incoming_count), next_id_(next_id) {
    write_options_.sync = options.sync;
  }

  ~RocksSampleStore() override {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    rocksdb::Status s = db_->Close();
    if (!s.ok()) {
      LOG(kWarning) << "sample store: close: " << s.ToString();
    }
    delete db_;
  }

  Result<IdRange> AppendIncoming(std::span<const Sample> samples) override {
    if (samples.empty()) return Status::InvalidArgument("empty batch");
    int64_t now = clock_->NowMicros();
    // All framings in one string; the data bytes are passed to RocksDB in
    // place (SliceParts), which saves a copy and an allocation per sample.
    std::string framing;
    framing.reserve(samples.size() * 96);
    std::vector<std::pair<size_t, size_t>> cuts(samples.size());  // (start, head_len)
    for (size_t i = 0; i < samples.size(); ++i) {
      const Sample& s = samples[i];
      cuts[i].first = framing.size();
      Status st = EncodeSampleFraming(s, s.ingest_time_us != 0 ? s.ingest_time_us : now, &framing,
                                      &cuts[i].second);
      if (!st.ok()) return st.WithContext("sample " + std::to_string(i));
    }
    if (floor_ != nullptr) {
      // Before ids are reserved: a refused batch takes none.
      uint64_t payload = framing.size();
      for (const Sample& s : samples) payload += s.data.size();
      RETURN_IF_ERROR(floor_->Check(payload));
    }

    // Reserve ids without holding the lock across the synced write, so that
    // concurrent appenders reach RocksDB together and share one WAL fsync.
    // Their ids are new, so each adds its whole batch to the count, unless a
    // put or delete has written past the next id: then the append may
    // overwrite such a record, and it looks its ids up first, as the counted
    // writes do (see Write).
    SampleId first;
    SampleId written_ahead;
    std::unique_lock<std::mutex> counted;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (written_ahead_ >= next_id_) {
        lock.unlock();
        counted = std::unique_lock<std::mutex>(counted_write_mu_);
        lock.lock();
      }
      first = next_id_;
      next_id_ += samples.size();
      written_ahead = written_ahead_;
      in_flight_.emplace(first, first + samples.size() - 1);
    }
    IdRange range{first, first + samples.size() - 1};
    uint64_t added = samples.size();
    if (counted.owns_lock() && written_ahead >= first) {
      Result<uint64_t> stored =
          CountSampleKeys(db_, handles_[static_cast<int>(Family::kIncoming)], first,
                          std::min(range.last, written_ahead) + 1);
      if (!stored.ok()) {
        EndAppend(first);
        return stored.status();
      }
      added -= *stored;
    }
    size_t bytes = framing.size() + 64 + samples.size() * 16;
    for (const Sample& s : samples) bytes += s.data.size();
    rocksdb::WriteBatch batch(bytes);  // one allocation, no regrowth copies
    rocksdb::ColumnFamilyHandle* cf = handles_[static_cast<int>(Family::kIncoming)];
    for (size_t i = 0; i < samples.size(); ++i) {
      std::string key = BigEndian(first + i);
      size_t start = cuts[i].first, head = cuts[i].second;
      size_t end = i + 1 < samples.size() ? cuts[i + 1].first : framing.size();
      rocksdb::Slice key_part(key);
      rocksdb::Slice value_parts[3] = {
          rocksdb::Slice(framing.data() + start, head),
          rocksdb::Slice(samples[i].data),
          rocksdb::Slice(framing.data() + start + head, end - start - head)};
      batch.Put(cf, rocksdb::SliceParts(&key_part, 1), rocksdb::SliceParts(value_parts, 3));
    }
    batch.Merge(handles_[static_cast<int>(Family::kState)], kNextIdKey, BigEndian(range.last + 1));
    rocksdb::Status s = DbWrite(&batch);
    if (s.ok()) incoming_count_.fetch_add(added);
    EndAppend(first);
    incoming_generation_.fetch_add(1);  // also on failure: cheaper than reasoning about partial states
    RETURN_IF_ERROR(FromRocks(s, "append incoming"));
    return range;
  }

  Result<std::vector<StoredSample>> ReadIncoming(SampleId after_id, size_t max_count) override {
    std::vector<StoredSample> out;
    if (after_id == UINT64_MAX) return out;
    SampleId limit = VisibleLimit();
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(ScanOptions(), handles_[static_cast<int>(Family::kIncoming)]));
    for (it->Seek(BigEndian(after_id + 1)); it->Valid() && out.size() < max_count; it->Next()) {
      rocksdb::Slice k = it->key();
      if (k.size() != 8) {
        CountCorrupt("incoming key of " + std::to_string(k.size()) + " bytes");
        continue;
      }
      SampleId id = coding::GetBigEndian64({k.data(), 8});
      if (id >= limit) break;
      Result<Sample> s = DecodeSample({it->value().data(), it->value().size()});
      if (!s.ok()) {
        CountCorrupt("incoming " + std::to_string(id) + ": " + s.status().message());
        continue;
      }
      out.push_back({id, std::move(s).value()});
    }
    RETURN_IF_ERROR(FromRocks(it->status(), "read incoming"));
    return out;
  }

  Result<Sample> GetIncoming(SampleId id) override {
    ASSIGN_OR_RETURN(auto v, Get(Family::kIncoming, IncomingKey(id)));
    if (!v) return Status::NotFound("incoming sample " + std::to_string(id));
    Result<Sample> s = DecodeSample(*v);
    if (!s.ok()) {
      CountCorrupt("incoming " + std::to_string(id) + ": " + s.status().message());
      return s.status().WithContext("incoming sample " + std::to_string(id));
    }
    return s;
  }

  Status PutIncoming(SampleId id, const Sample& sample) override {
    ASSIGN_OR_RETURN(std::string value, EncodeSample(sample));
    const Mutation put{Family::kIncoming, IncomingKey(id), std::move(value)};
    return Write(std::span<const Mutation>(&put, 1), "put incoming");
  }

  uint64_t incoming_generation() const override { return incoming_generation_.load(); }

  Result<uint64_t> CountIncoming(SampleId after_id) override {
    if (after_id == UINT64_MAX) return uint64_t{0};
    const SampleId limit = VisibleLimit();
    if (after_id + 1 >= limit) return uint64_t{0};
    return CountSampleKeys(db_, handles_[static_cast<int>(Family::kIncoming)], after_id + 1, limit);
  }

  uint64_t IncomingCount() const override { return incoming_count_.load(); }

  Status Apply(std::span<const Mutation> mutations) override { return Write(mutations, "apply"); }

  Result<std::optional<std::string>> Get(Family family, std::string_view key) override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handles_[static_cast<int>(family)],
                                 rocksdb::Slice(key.data(), key.size()), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    RETURN_IF_ERROR(FromRocks(s, "get"));
    return std::optional<std::string>(std::move(value));
  }

  Status Scan(Family family, std::string_view start,
              const std::function<bool(std::string_view, std::string_view)>& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(ScanOptions(), handles_[static_cast<int>(family)]));
    for (it->Seek(rocksdb::Slice(start.data(), start.size())); it->Valid(); it->Next()) {
      if (!fn({it->key().data(), it->key().size()}, {it->value().data(), it->value().size()})) {
        break;
      }
    }
    return FromRocks(it->status(), "scan");
  }

  uint64_t corrupt_records() const override { return corrupt_.load(); }

  SyncCounters sync_counters() const override {
    SyncCounters c;
    if (!write_options_.sync) return c;
    c.wal_syncs = stats_->getTickerCount(rocksdb::WAL_FILE_SYNCED);
    c.synced_writes = stats_->getTickerCount(rocksdb::WRITE_DONE_BY_SELF) +
                      stats_->getTickerCount(rocksdb::WRITE_DONE_BY_OTHER);
    return c;
  }

  uint64_t ApproximateMemoryBytes() override {
    uint64_t mem = 0, readers = 0;
    db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kSizeAllMemTables, &mem);
    db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateTableReadersMem, &readers);
    return mem + readers + cache_->GetUsage();
  }

  Status Flush() override {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return FromRocks(db_->Flush(fo, handles_), "flush");
  }

 private:
  // Ids at or above this are hidden from readers: an earlier id range may
  // still be in flight, and a reader that moved its cursor past it would
  // never see it.
  SampleId VisibleLimit() {
    std::lock_guard<std::mutex> lock(mu_);
    return in_flight_.empty() ? next_id_ : in_flight_.begin()->first;
  }

  void EndAppend(SampleId first) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_.erase(first);
    }
    append_done_.notify_all();
  }

  // Apply and PutIncoming. A batch that puts or deletes incoming samples
  // looks up which of its keys are stored before it writes, under
  // counted_write_mu_, because a put over a stored sample and a delete of a
  // missing one must not change the count: the learner rewrites a round's
  // samples with teacher logits, and deletes them all when it consumes the
  // round though the holdout split has already removed some.
  Status Write(std::span<const Mutation> mutations, std::string_view what) {
    uint64_t bytes = 0;
    for (const Mutation& m : mutations) bytes += m.key.size() + (m.value ? m.value->size() : 0);
    if (floor_ != nullptr) RETURN_IF_ERROR(floor_->Check(bytes));
    rocksdb::WriteBatch batch;
    bool incoming = false;
    std::vector<const Mutation*> samples;
    for (const Mutation& m : mutations) {
      rocksdb::ColumnFamilyHandle* cf = handles_[static_cast<int>(m.family)];
      incoming = incoming || m.family == Family::kIncoming;
      if (m.family == Family::kIncoming && m.key.size() == 8) samples.push_back(&m);
      if (m.value) {
        batch.Put(cf, m.key, *m.value);
      } else {
        batch.Delete(cf, m.key);
      }
    }
    std::unique_lock<std::mutex> counted;
    int64_t delta = 0;
    if (!samples.empty()) {
      counted = std::unique_lock<std::mutex>(counted_write_mu_);
      ASSIGN_OR_RETURN(delta, CountChange(samples));
    }
    rocksdb::Status s = DbWrite(&batch);
    // Unsigned wrap-around: adding the cast of a negative delta subtracts.
    if (s.ok()) incoming_count_.fetch_add(static_cast<uint64_t>(delta));
    if (incoming) incoming_generation_.fetch_add(1);
    return FromRocks(s, what);
  }

  // How many samples `samples` (incoming mutations with SampleId keys, in
  // batch order) add to the store as it is now; negative when they remove
  // more. Caller holds counted_write_mu_, so no other counted write lands
  // until it has written.
  Result<int64_t> CountChange(const std::vector<const Mutation*>& samples) {
    std::vector<SampleId> ids;
    for (const Mutation* m : samples) ids.push_back(coding::GetBigEndian64(m->key));
    const SampleId highest = *std::max_element(ids.begin(), ids.end());
    {
      std::unique_lock<std::mutex> lock(mu_);
      // An id not assigned yet: the append that reaches it must look it up
      // after this write, not race it.
      if (highest >= next_id_) written_ahead_ = std::max(written_ahead_, highest);
      // Ids of an append in flight: whether the key is stored depends on
      // when that append lands, so wait until it has.
      append_done_.wait(lock, [&] { return !InFlightLocked(ids); });
    }
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(ScanOptions(), handles_[static_cast<int>(Family::kIncoming)]));
    std::map<std::string_view, bool> stored;  // by key, as the batch goes
    int64_t delta = 0;
    for (const Mutation* m : samples) {
      auto [slot, first_seen] = stored.try_emplace(m->key, false);
      if (first_seen) {
        it->Seek(m->key);
        if (!it->Valid()) RETURN_IF_ERROR(FromRocks(it->status(), "look up incoming"));
        slot->second = it->Valid() && it->key() == rocksdb::Slice(m->key);
      }
      const bool after = m->value.has_value();
      delta += static_cast<int64_t>(after) - static_cast<int64_t>(slot->second);
      slot->second = after;
    }
    return delta;
  }

  // True if an append in flight covers one of `ids`.
  bool InFlightLocked(const std::vector<SampleId>& ids) const {
    for (SampleId id : ids) {
      auto it = in_flight_.upper_bound(id);
      if (it != in_flight_.begin() && std::prev(it)->second >= id) return true;
    }
    return false;
  }

  void CountCorrupt(const std::string& what) {
    corrupt_.fetch_add(1);
    LOG(kError) << "sample store: skipping unreadable record: " << what;
  }

  // db_->Write, one at a time in the TSan build only: RocksDB's write-group
  // leader reads its followers' batches, ordered by RocksDB's uninstrumented
  // atomics, which TSan reports as races between our callers' threads.
  // Everything of ours around the write (id reservation, the in-flight set,
  // the counts) still runs concurrently there. See tests/tsan.supp.
  rocksdb::Status DbWrite(rocksdb::WriteBatch* batch) {
#ifdef DISTILLD_TSAN
    std::lock_guard<std::mutex> serial(tsan_write_mu_);
#endif
    return db_->Write(write_options_, batch);
  }

  rocksdb::DB* db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // indexed by Family
  std::shared_ptr<rocksdb::Cache> cache_;
  std::shared_ptr<rocksdb::Statistics> stats_;  // tickers only: cheap
  Clock* clock_;
  const FreeSpaceFloor* floor_;  // may be null
  rocksdb::WriteOptions write_options_;
  std::atomic<uint64_t> corrupt_{0};
  std::atomic<uint64_t> incoming_count_;
  std::atomic<uint64_t> incoming_generation_{0};

  // Held from look-up to write by a write whose change to incoming_count_
  // depends on what is stored (see Write, and an append that may overwrite a
  // record written ahead), so no other such write lands in between. Taken
  // before mu_.
  std::mutex counted_write_mu_;
#ifdef DISTILLD_TSAN
  std::mutex tsan_write_mu_;  // see DbWrite
#endif
  std::mutex mu_;
  std::condition_variable append_done_;  // an append left in_flight_; waits hold mu_
  SampleId next_id_;                     // guarded by mu_
  // Highest id that a counted write touched at or past next_id_; guarded by mu_.
  SampleId written_ahead_ = 0;
  std::map<SampleId, SampleId> in_flight_;  // first -> last id of unfinished appends; guarded by mu_
};

}  // namespace

std::string SampleStore::IncomingKey(SampleId id) { return BigEndian(id); }

Result<std::unique_ptr<SampleStore>> SampleStore::Open(const SampleStoreOptions& options) {
  if (options.path.empty()) return Status::InvalidArgument("sample store: path is required");
  SampleStoreOptions opts = options;
  if (opts.clock == nullptr) opts.clock = Clock::Real();

  auto cache = rocksdb::NewLRUCache(opts.block_cache_bytes);
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  // Index and filter blocks live in the cache, so the cache bounds them too.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  // Debian's RocksDB is built without SSE4.2, so CRC32c runs in software;
  // XXH3 block checksums cost a fraction of that on flush and read.
  table.checksum = rocksdb::kXXH3;

  rocksdb::ColumnFamilyOptions cf_opts;
  cf_opts.write_buffer_size = opts.write_buffer_bytes;
  cf_opts.max_write_buffer_number = std::max(1, opts.max_write_buffer_number);
  cf_opts.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // LZ4 rather than the default Snappy: about as small for pixel data, less
  // CPU on a 2-core edge box. "incoming" is transient (the learner consumes
  // and deletes it), so its flushes skip compression altogether: profiling
  // the ingest benchmark showed Snappy as the largest CPU user.
  cf_opts.compression = rocksdb::kLZ4Compression;
  rocksdb::ColumnFamilyOptions incoming_opts = cf_opts;
  incoming_opts.compression = rocksdb::kNoCompression;
  rocksdb::ColumnFamilyOptions state_opts = cf_opts;
  state_opts.merge_operator = std::make_shared<MaxU64Operator>();

  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  // Total memtable memory over all families: two full families' worth. With
  // the defaults (8 MiB x 2) that is 32 MiB, plus the 16 MiB cache.
  db_opts.db_write_buffer_size =
      opts.write_buffer_bytes * static_cast<size_t>(cf_opts.max_write_buffer_number) * 2;
  // "state" receives a tiny write with every append and would otherwise keep
  // old WAL files alive until its memtable fills; capping the WAL forces its
  // flush and bounds both disk use and replay time after a crash.
  db_opts.max_total_wal_size = std::max<uint64_t>(64u << 20, 4 * opts.write_buffer_bytes);
  db_opts.max_open_files = 256;
  db_opts.keep_log_file_num = 3;
  db_opts.max_background_jobs = 2;
  // Compactions are deferrable; inference and ingest acknowledgements are
  // not. RocksDB's compaction threads (the process-wide default Env's LOW
  // pool) run at nice 19, so after a large ingest they use idle CPU instead
  // of competing with the I/O loops. Flushes (HIGH pool) keep normal
  // priority: a starved flush would stall writes.
  if (rocksdb::Status p = db_opts.env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW,
                                                                   rocksdb::CpuPriority::kLow);
      !p.ok()) {
    LOG(kWarning) << "sample store: compaction threads keep normal priority: " << p.ToString();
  }
  // Group commit: one leader writes and fsyncs the WAL for every writer
  // queued behind it, up to this many bytes (a leader of under 1/8 of it
  // takes its own size + 1/8). RocksDB's 1 MiB default let only two 32-sample
  // batches, or one 256-sample batch, share an fsync (measured: 2.00 and 1.00
  // batches per sync); the copy it costs is transient.
  db_opts.max_write_batch_group_size_bytes = 16u << 20;
  auto stats = rocksdb::CreateDBStatistics();
  stats->set_stats_level(rocksdb::kExceptHistogramOrTimers);
  db_opts.statistics = stats;

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  cfs.emplace_back(rocksdb::kDefaultColumnFamilyName, cf_opts);
  for (int i = 0; i < 4; ++i) {
    cfs.emplace_back(kFamilyNames[i], i == static_cast<int>(Family::kState)      ? state_opts
                                      : i == static_cast<int>(Family::kIncoming) ? incoming_opts
                                                                                  : cf_opts);
  }
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::Options(db_opts, cf_opts), opts.path, cfs,
                                        &handles, &db);
  RETURN_IF_ERROR(FromRocks(s, "open sample store at " + opts.path));
  // We never use the default family; drop its handle (the DB keeps it).
  db->DestroyColumnFamilyHandle(handles[0]);
  handles.erase(handles.begin());

  // Next id: the persisted counter, or one past the last key if that is
  // larger (it cannot be, but a hand-edited store should not reuse ids).
  SampleId next_id = 1;
  std::string v;
  s = db->Get(rocksdb::ReadOptions(), handles[static_cast<int>(Family::kState)], kNextIdKey, &v);
  if (s.ok() && v.size() == 8) next_id = std::max<SampleId>(next_id, coding::GetBigEndian64(v));
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), handles[static_cast<int>(Family::kIncoming)]));
    it->SeekToLast();
    while (it->Valid() && it->key().size() != 8) it->Prev();
    if (it->Valid()) {
      next_id = std::max<SampleId>(next_id, coding::GetBigEndian64({it->key().data(), 8}) + 1);
    }
  }
  // The one scan of "incoming" the count costs; writes keep it from here on.
  Result<uint64_t> incoming = CountSampleKeys(db, handles[static_cast<int>(Family::kIncoming)], 0, 0);
  if (!incoming.ok()) {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    delete db;
    return incoming.status().WithContext("open sample store at " + opts.path);
  }
  return std::unique_ptr<SampleStore>(
      new RocksSampleStore(db, std::move(handles), std::move(cache), std::move(stats), opts,
                           next_id, *incoming));
}

}  // namespace distilld::storage
