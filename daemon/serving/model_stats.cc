#include "daemon/serving/model_stats.h"

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <utility>

#include "daemon/http/json_util.h"

namespace distilld::daemon {
namespace {

uint64_t Ns(int64_t us) { return us > 0 ? static_cast<uint64_t>(us) * 1000u : 0u; }

}  // namespace

ModelStats::ModelStats(ModelStatsOptions options) : options_(std::move(options)) {
  if (!options_.wall_ms) {
    options_.wall_ms = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
  }
  options_.max_versions = std::max<size_t>(1, options_.max_versions);
}

ModelStats::Entry& ModelStats::EntryLocked(int64_t version) {
  auto it = versions_.find(version);
  if (it != versions_.end()) return it->second;
  // The oldest records go first: versions only grow, and the newest are the
  // ones being served.
  while (versions_.size() >= options_.max_versions) versions_.erase(versions_.begin());
  Entry& e = versions_[version];
  e.stats.version = version;
  return e;
}

void ModelStats::RecordExecution(int64_t version, int64_t samples, int64_t input_us,
                                 int64_t infer_us, int64_t output_us) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = EntryLocked(version);
  e.stats.execution_count += 1;
  e.stats.inference_count += static_cast<uint64_t>(std::max<int64_t>(0, samples));
  BatchSizeStats& b = e.batches[samples];
  b.batch_size = samples;
  b.compute_input.Add(Ns(input_us));
  b.compute_infer.Add(Ns(infer_us));
  b.compute_output.Add(Ns(output_us));
}

void ModelStats::RecordSuccess(int64_t version, const RequestTiming& t) {
  const int64_t now_ms = options_.wall_ms();
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = EntryLocked(version);
  e.stats.last_inference_ms = std::max(e.stats.last_inference_ms, now_ms);
  e.stats.success.Add(Ns(t.total_us));
  e.stats.queue.Add(Ns(t.queue_us));
  e.stats.compute_input.Add(Ns(t.input_us));
  e.stats.compute_infer.Add(Ns(t.infer_us));
  e.stats.compute_output.Add(Ns(t.output_us));
}

void ModelStats::RecordFailure(int64_t version, int64_t total_us) {
  std::lock_guard<std::mutex> lock(mu_);
  EntryLocked(version).stats.fail.Add(Ns(total_us));
}

VersionStats ModelStats::Render(const Entry& e) const {
  VersionStats out = e.stats;
  out.batch_stats.clear();
  for (const auto& [size, b] : e.batches) out.batch_stats.push_back(b);
  return out;
}

std::vector<VersionStats> ModelStats::All() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<VersionStats> out;
  for (const auto& [v, e] : versions_) out.push_back(Render(e));
  return out;
}

std::optional<VersionStats> ModelStats::Of(int64_t version) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = versions_.find(version);
  if (it == versions_.end()) return std::nullopt;
  return Render(it->second);
}

namespace {

using NamedDuration = std::pair<const char*, const DurationStat*>;

// "key":{"count":C,"ns":N},... for each pair, comma-separated.
void AppendDurations(std::string* out, std::initializer_list<NamedDuration> items) {
  bool first = true;
  for (const auto& [key, d] : items) {
    if (!first) *out += ',';
    first = false;
    *out += '"';
    *out += key;
    *out += "\":{\"count\":" + std::to_string(d->count) + ",\"ns\":" + std::to_string(d->ns) + "}";
  }
}

}  // namespace

std::string EncodeModelStats(std::string_view name, const std::vector<VersionStats>& versions) {
  std::string out = "{\"model_stats\":[";
  for (size_t i = 0; i < versions.size(); ++i) {
    const VersionStats& v = versions[i];
    if (i > 0) out += ',';
    out += "{\"name\":";
    AppendJsonString(&out, name);
    out += ",\"version\":\"" + std::to_string(v.version) + "\"";
    out += ",\"last_inference\":" + std::to_string(v.last_inference_ms);
    out += ",\"inference_count\":" + std::to_string(v.inference_count);
    out += ",\"execution_count\":" + std::to_string(v.execution_count);
    static const DurationStat kNone;  // no response cache: its hits and misses stay zero
    out += ",\"inference_stats\":{";
    AppendDurations(&out, {{"success", &v.success},
                           {"fail", &v.fail},
                           {"queue", &v.queue},
                           {"compute_input", &v.compute_input},
                           {"compute_infer", &v.compute_infer},
                           {"compute_output", &v.compute_output},
                           {"cache_hit", &kNone},
                           {"cache_miss", &kNone}});
    out += "},\"batch_stats\":[";
    for (size_t j = 0; j < v.batch_stats.size(); ++j) {
      const BatchSizeStats& b = v.batch_stats[j];
      if (j > 0) out += ',';
      out += "{\"batch_size\":" + std::to_string(b.batch_size) + ",";
      AppendDurations(&out, {{"compute_input", &b.compute_input},
                             {"compute_infer", &b.compute_infer},
                             {"compute_output", &b.compute_output}});
      out += '}';
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

}  // namespace distilld::daemon
