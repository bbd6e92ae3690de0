#include "daemon/http/metrics.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <iostream>

namespace distilld::daemon {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

void AppendPromDouble(std::string* out, double v) {
  if (std::isnan(v)) {
    out->append("NaN");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
  } else {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out->append(buf, r.ptr);
  }
}

namespace {

// Label values are escaped as the text format requires: \ " and newline.
void AppendLabelValue(std::string* out, const std::string& v) {
  for (char c : v) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '"') {
      out->append("\\\"");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

// `{a="x",b="y"` without the closing brace, or "" when there are no labels
// and no extra label; `extra` is an already formatted `le="..."`.
void AppendLabels(std::string* out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, const std::string& extra) {
  if (names.empty() && extra.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out->push_back(',');
    out->append(names[i]).append("=\"");
    AppendLabelValue(out, i < values.size() ? values[i] : std::string());
    out->push_back('"');
  }
  if (!extra.empty()) {
    if (!names.empty()) out->push_back(',');
    out->append(extra);
  }
  out->push_back('}');
}

void AppendHeader(std::string* out, const std::string& name, const std::string& help,
                  const char* type) {
  out->append("# HELP ").append(name).push_back(' ');
  for (char c : help) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
  out->append("\n# TYPE ").append(name).push_back(' ');
  out->append(type).push_back('\n');
}

}  // namespace

void MetricsRegistry::CheckNewName(const std::string& name) {
  for (const auto& n : names_) {
    if (n == name) {
      std::cerr << "<2>fatal: metric registered twice: " << name << std::endl;
      std::abort();
    }
  }
  names_.push_back(name);
}

Family<Counter>* MetricsRegistry::RegisterCounter(std::string name, std::string help,
                                                  std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckNewName(name);
  counters_.emplace_back(new Family<Counter>(std::move(name), std::move(help), std::move(label_names),
                                             [] { return std::make_unique<Counter>(); }));
  order_.emplace_back(0, counters_.size() - 1);
  return counters_.back().get();
}

Family<Gauge>* MetricsRegistry::RegisterGauge(std::string name, std::string help,
                                              std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckNewName(name);
  gauges_.emplace_back(new Family<Gauge>(std::move(name), std::move(help), std::move(label_names),
                                         [] { return std::make_unique<Gauge>(); }));
  order_.emplace_back(1, gauges_.size() - 1);
  return gauges_.back().get();
}

Family<Histogram>* MetricsRegistry::RegisterHistogram(std::string name, std::string help,
                                                      std::vector<double> bounds,
                                                      std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckNewName(name);
  histograms_.emplace_back(new Family<Histogram>(
      std::move(name), std::move(help), std::move(label_names),
      [bounds = std::move(bounds)] { return std::make_unique<Histogram>(bounds); }));
  order_.emplace_back(2, histograms_.size() - 1);
  return histograms_.back().get();
}

void MetricsRegistry::AddCollector(Collector collector) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  out.reserve(8192);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto [kind, index] : order_) {
    if (kind == 0) {
      const auto& f = *counters_[index];
      AppendHeader(&out, f.name_, f.help_, "counter");
      std::lock_guard<std::mutex> flock(f.mu_);
      for (const auto& [values, c] : f.children_) {
        out.append(f.name_);
        AppendLabels(&out, f.label_names_, values, "");
        out.push_back(' ');
        out.append(std::to_string(c->value())).push_back('\n');
      }
    } else if (kind == 1) {
      const auto& f = *gauges_[index];
      AppendHeader(&out, f.name_, f.help_, "gauge");
      std::lock_guard<std::mutex> flock(f.mu_);
      for (const auto& [values, g] : f.children_) {
        out.append(f.name_);
        AppendLabels(&out, f.label_names_, values, "");
        out.push_back(' ');
        AppendPromDouble(&out, g->value());
        out.push_back('\n');
      }
    } else {
      const auto& f = *histograms_[index];
      AppendHeader(&out, f.name_, f.help_, "histogram");
      std::lock_guard<std::mutex> flock(f.mu_);
      for (const auto& [values, h] : f.children_) {
        // Read the buckets once and derive the count from them so that the
        // exposition is self-consistent (+Inf bucket == _count) even while
        // observations race with the scrape.
        std::vector<uint64_t> counts = h->BucketCounts();
        uint64_t cumulative = 0;
        for (size_t i = 0; i < counts.size(); ++i) {
          cumulative += counts[i];
          std::string le = "le=\"";
          if (i < h->bounds().size()) {
            AppendPromDouble(&le, h->bounds()[i]);
          } else {
            le += "+Inf";
          }
          le += '"';
          out.append(f.name_).append("_bucket");
          AppendLabels(&out, f.label_names_, values, le);
          out.push_back(' ');
          out.append(std::to_string(cumulative)).push_back('\n');
        }
        out.append(f.name_).append("_sum");
        AppendLabels(&out, f.label_names_, values, "");
        out.push_back(' ');
        AppendPromDouble(&out, h->sum());
        out.push_back('\n');
        out.append(f.name_).append("_count");
        AppendLabels(&out, f.label_names_, values, "");
        out.push_back(' ');
        out.append(std::to_string(cumulative)).push_back('\n');
      }
    }
  }
  for (const auto& c : collectors_) c(&out);
  return out;
}

}  // namespace distilld::daemon
