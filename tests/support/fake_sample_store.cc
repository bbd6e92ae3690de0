#include "tests/support/fake_sample_store.h"

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace distilld::testing {
namespace {

using storage::Family;
using storage::Sample;
using storage::SampleId;
using storage::SampleStore;

// The real store keeps its next-id counter as a record in "state", merged
// with max() on every append. Components scanning "state" see it there in
// production, so the fake keeps the same record.
constexpr char kNextIdKey[] = "storage/next_incoming_id";

// Inverse of SampleStore::IncomingKey for an 8-byte key (big-endian u64).
SampleId IdFromKey(std::string_view key) {
  SampleId id = 0;
  for (char c : key) id = (id << 8) | static_cast<unsigned char>(c);
  return id;
}

Status InjectedFailure(std::string_view what) {
  return Status::IoError(std::string(what) + ": injected write failure (FakeSampleStore)");
}

}  // namespace

FakeSampleStore::FakeSampleStore(Clock* clock) : clock_(clock != nullptr ? clock : Clock::Real()) {}

FakeSampleStore::Records& FakeSampleStore::FamilyLocked(Family family) {
  return families_[static_cast<size_t>(family)];
}

bool FakeSampleStore::TakeFailureLocked() {
  if (failures_pending_ <= 0) return false;
  --failures_pending_;
  return true;
}

void FakeSampleStore::CountCorruptLocked(const std::string& what) {
  ++corrupt_;
  LOG(kError) << "fake sample store: skipping unreadable record: " << what;
}

Result<storage::IdRange> FakeSampleStore::AppendIncoming(std::span<const Sample> samples) {
  if (samples.empty()) return Status::InvalidArgument("empty batch");
  const int64_t now = clock_->NowMicros();
  // Encode everything before taking ids, so a bad sample stores nothing and
  // uses no ids, as in the real store.
  std::vector<std::string> values;
  values.reserve(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    Sample s = samples[i];
    if (s.ingest_time_us == 0) s.ingest_time_us = now;
    Result<std::string> encoded = storage::EncodeSample(s);
    if (!encoded.ok()) return encoded.status().WithContext("sample " + std::to_string(i));
    values.push_back(std::move(encoded).value());
  }

  std::lock_guard<std::mutex> lock(mu_);
  const storage::IdRange range{next_id_, next_id_ + samples.size() - 1};
  next_id_ += samples.size();
  ++incoming_generation_;
  if (TakeFailureLocked()) return InjectedFailure("append incoming");
  Records& incoming = FamilyLocked(Family::kIncoming);
  for (size_t i = 0; i < values.size(); ++i) {
    // Not always new: a put may have written past the next id.
    const std::string key = SampleStore::IncomingKey(range.first + i);
    incoming_count_ += incoming.insert_or_assign(key, std::move(values[i])).second;
  }
  // max(), like the real store's merge operator: an Apply may have put any
  // value there.
  std::string& counter = FamilyLocked(Family::kState)[kNextIdKey];
  const SampleId stored = counter.size() == 8 ? IdFromKey(counter) : 0;
  counter = SampleStore::IncomingKey(std::max(stored, range.last + 1));
  return range;
}

Result<std::vector<storage::StoredSample>> FakeSampleStore::ReadIncoming(SampleId after_id,
                                                                         size_t max_count) {
  std::vector<storage::StoredSample> out;
  if (after_id == UINT64_MAX) return out;
  std::lock_guard<std::mutex> lock(mu_);
  const SampleId limit = VisibleLimitLocked();
  const Records& incoming = FamilyLocked(Family::kIncoming);
  // Same walk as the real store's iterator, so keys of the wrong size and
  // undecodable values are skipped and counted the same number of times.
  for (auto it = incoming.lower_bound(SampleStore::IncomingKey(after_id + 1));
       it != incoming.end() && out.size() < max_count; ++it) {
    if (it->first.size() != 8) {
      CountCorruptLocked("incoming key of " + std::to_string(it->first.size()) + " bytes");
      continue;
    }
    const SampleId id = IdFromKey(it->first);
    if (id >= limit) break;
    Result<Sample> s = storage::DecodeSample(it->second);
    if (!s.ok()) {
      CountCorruptLocked("incoming " + std::to_string(id) + ": " + s.status().message());
      continue;
    }
    out.push_back({id, std::move(s).value()});
  }
  return out;
}

Result<Sample> FakeSampleStore::GetIncoming(SampleId id) {
  std::lock_guard<std::mutex> lock(mu_);
  const Records& incoming = FamilyLocked(Family::kIncoming);
  auto it = incoming.find(SampleStore::IncomingKey(id));
  if (it == incoming.end()) return Status::NotFound("incoming sample " + std::to_string(id));
  Result<Sample> s = storage::DecodeSample(it->second);
  if (!s.ok()) {
    CountCorruptLocked("incoming " + std::to_string(id) + ": " + s.status().message());
    return s.status().WithContext("incoming sample " + std::to_string(id));
  }
  return s;
}

Status FakeSampleStore::PutIncoming(SampleId id, const Sample& sample) {
  ASSIGN_OR_RETURN(std::string value, storage::EncodeSample(sample));
  std::lock_guard<std::mutex> lock(mu_);
  ++incoming_generation_;
  if (TakeFailureLocked()) return InjectedFailure("put incoming");
  Records& incoming = FamilyLocked(Family::kIncoming);
  incoming_count_ += incoming.insert_or_assign(SampleStore::IncomingKey(id), std::move(value)).second;
  return Status::Ok();
}

Result<uint64_t> FakeSampleStore::CountIncoming(SampleId after_id) {
  if (after_id == UINT64_MAX) return uint64_t{0};
  std::lock_guard<std::mutex> lock(mu_);
  const SampleId limit = VisibleLimitLocked();
  if (after_id + 1 >= limit) return uint64_t{0};
  const Records& incoming = FamilyLocked(Family::kIncoming);
  auto end = incoming.lower_bound(SampleStore::IncomingKey(limit));
  uint64_t n = 0;
  // Keys only, like the real store: a record with a corrupt value counts.
  for (auto it = incoming.lower_bound(SampleStore::IncomingKey(after_id + 1)); it != end; ++it) {
    if (it->first.size() == 8) ++n;
  }
  return n;
}

uint64_t FakeSampleStore::IncomingCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return incoming_count_;
}

uint64_t FakeSampleStore::incoming_generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return incoming_generation_;
}

void FakeSampleStore::SetBeforeApply(std::function<void()> hook) { before_apply_ = std::move(hook); }

Status FakeSampleStore::Apply(std::span<const storage::Mutation> mutations) {
  if (before_apply_) before_apply_();
  std::lock_guard<std::mutex> lock(mu_);
  const bool incoming = std::any_of(mutations.begin(), mutations.end(),
                                    [](const auto& m) { return m.family == Family::kIncoming; });
  if (incoming) ++incoming_generation_;
  // Checked before the first change: that is what makes a failed batch
  // all-or-nothing. Holding mu_ for the whole batch makes a successful one
  // atomic for readers.
  if (TakeFailureLocked()) return InjectedFailure("apply");
  // In order, so a later mutation of the same key wins, as in a WriteBatch.
  for (const storage::Mutation& m : mutations) {
    Records& records = FamilyLocked(m.family);
    const bool sample = m.family == Family::kIncoming && m.key.size() == 8;
    if (m.value) {
      const bool added = records.insert_or_assign(m.key, *m.value).second;
      if (sample && added) ++incoming_count_;
    } else if (auto it = records.find(m.key); it != records.end()) {
      records.erase(it);
      if (sample) --incoming_count_;
    }
  }
  return Status::Ok();
}

Result<std::optional<std::string>> FakeSampleStore::Get(Family family, std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  const Records& records = FamilyLocked(family);
  auto it = records.find(key);
  if (it == records.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Status FakeSampleStore::Scan(Family family, std::string_view start,
                             const std::function<bool(std::string_view, std::string_view)>& fn) {
  std::vector<std::pair<std::string, std::string>> snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Records& records = FamilyLocked(family);
    snapshot.assign(records.lower_bound(start), records.end());
  }
  for (const auto& [key, value] : snapshot) {
    if (!fn(key, value)) break;
  }
  return Status::Ok();
}

uint64_t FakeSampleStore::corrupt_records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return corrupt_;
}

uint64_t FakeSampleStore::ApproximateMemoryBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t bytes = 0;
  for (const Records& records : families_) {
    for (const auto& [key, value] : records) bytes += key.size() + value.size();
  }
  return bytes;
}

Status FakeSampleStore::Flush() {
  std::lock_guard<std::mutex> lock(mu_);
  ++flushes_;
  return Status::Ok();
}

void FakeSampleStore::FailNextWrites(int count) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_pending_ = std::max(0, count);
}

int FakeSampleStore::flush_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return flushes_;
}

std::unique_ptr<storage::SampleStore> NewFakeSampleStore(Clock* clock) {
  return std::make_unique<FakeSampleStore>(clock);
}

}  // namespace distilld::testing
