#include "daemon/serving/capture.h"

namespace distilld::daemon {

CaptureIndex::CaptureIndex(Clock* clock, int64_t ttl_us, size_t max_entries, uint64_t seed)
    : clock_(clock), ttl_us_(ttl_us), max_entries_(max_entries), rng_(seed) {}

bool CaptureIndex::ShouldCapture(double fraction) {
  if (fraction <= 0) return false;
  if (fraction >= 1) return true;
  std::lock_guard<std::mutex> lock(mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < fraction;
}

void CaptureIndex::Put(const std::string& request_id, storage::SampleId first, int64_t count) {
  if (request_id.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMicros();
  EvictLocked(now);
  const int64_t expires = now + ttl_us_;
  entries_[request_id] = Entry{first, count, expires};
  order_.emplace_back(expires, request_id);
  while (entries_.size() > max_entries_ && !order_.empty()) {
    auto it = entries_.find(order_.front().second);
    if (it != entries_.end() && it->second.expires_us == order_.front().first) entries_.erase(it);
    order_.pop_front();
  }
}

std::optional<CaptureIndex::Entry> CaptureIndex::Find(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMicros();
  EvictLocked(now);
  auto it = entries_.find(request_id);
  if (it == entries_.end() || it->second.expires_us <= now) return std::nullopt;
  return it->second;
}

void CaptureIndex::set_ttl_us(int64_t ttl_us) {
  std::lock_guard<std::mutex> lock(mu_);
  ttl_us_ = ttl_us;
}

size_t CaptureIndex::size() {
  std::lock_guard<std::mutex> lock(mu_);
  EvictLocked(clock_->NowMicros());
  return entries_.size();
}

void CaptureIndex::EvictLocked(int64_t now) {
  while (!order_.empty() && order_.front().first <= now) {
    auto it = entries_.find(order_.front().second);
    // A re-used id has a newer expiry; only drop the entry this record made.
    if (it != entries_.end() && it->second.expires_us == order_.front().first) entries_.erase(it);
    order_.pop_front();
  }
}

}  // namespace distilld::daemon
