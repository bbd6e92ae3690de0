// Metrics: counters, gauges and histograms rendered in the Prometheus text
// exposition format (version 0.0.4) for GET /metrics.
//
// A MetricsRegistry owns every family registered with it; the pointers it
// hands out stay valid for the registry's lifetime, so hot paths look a child
// up once (or per request, which costs one short mutex hold) and then update
// it lock-free. Components added later (learner, ingest) register their own
// families, or a Collector callback that appends text at scrape time for
// values they already keep elsewhere (e.g. buffer size).
//
// Thread-safety: everything here may be used concurrently. Names must follow
// Prometheus conventions (counters end in _total, durations are in seconds)
// so that `promtool check metrics` passes; Register* aborts on a name that is
// registered twice, which is a programming error.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace distilld::daemon {

class Counter {
 public:
  void Increment(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Cumulative histogram over fixed upper bounds (the +Inf bucket is implicit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket (non-cumulative) counts; the last entry is the +Inf bucket.
  std::vector<uint64_t> BucketCounts() const;
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Bucket helpers: `count` bounds start, start*factor, ...
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// A metric family: one name, one help text, children keyed by label values.
template <typename T>
class Family {
 public:
  // Child for these label values (in the order of the family's label names),
  // created on first use. The pointer stays valid for the registry's life.
  T* WithLabels(const std::vector<std::string>& values);
  // Child without labels (for families declared with no label names).
  T* Get() { return WithLabels({}); }
  // Every child with its label values (a snapshot of the child set).
  std::vector<std::pair<std::vector<std::string>, T*>> Children() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::pair<std::vector<std::string>, T*>> out;
    for (const auto& [labels, child] : children_) out.emplace_back(labels, child.get());
    return out;
  }

 private:
  friend class MetricsRegistry;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::function<std::unique_ptr<T>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_(std::move(make)) {}
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::function<std::unique_ptr<T>()> make_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;  // guarded by mu_
};

class MetricsRegistry {
 public:
  // Appends complete exposition text (with # HELP and # TYPE lines) for
  // metrics kept outside the registry.
  using Collector = std::function<void(std::string* out)>;

  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  Family<Counter>* RegisterCounter(std::string name, std::string help,
                                   std::vector<std::string> label_names = {});
  Family<Gauge>* RegisterGauge(std::string name, std::string help,
                               std::vector<std::string> label_names = {});
  Family<Histogram>* RegisterHistogram(std::string name, std::string help, std::vector<double> bounds,
                                       std::vector<std::string> label_names = {});
  void AddCollector(Collector collector);

  // The whole exposition, families in registration order, then collectors.
  std::string Render() const;

 private:
  void CheckNewName(const std::string& name);
  mutable std::mutex mu_;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<Family<Counter>>> counters_;
  std::vector<std::unique_ptr<Family<Gauge>>> gauges_;
  std::vector<std::unique_ptr<Family<Histogram>>> histograms_;
  std::vector<std::pair<int, size_t>> order_;  // (kind, index) in registration order
  std::vector<Collector> collectors_;
};

// Appends a double in Prometheus syntax ("+Inf", "NaN", shortest round-trip).
void AppendPromDouble(std::string* out, double v);

template <typename T>
T* Family<T>::WithLabels(const std::vector<std::string>& values) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(values);
  if (it != children_.end()) return it->second.get();
  auto [inserted, _] = children_.emplace(values, make_());
  return inserted->second.get();
}

}  // namespace distilld::daemon
