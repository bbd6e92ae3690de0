#include <deque>
#include <mutex>
#include <optional>

#include "common/log.h"
#include "replaybuffer/replay_buffer.h"
#include "replaybuffer/class_counts.h"
#include "storage/coding.h"

namespace distilld::replaybuffer {
namespace {

using storage::Family;
using storage::Mutation;
namespace coding = storage::coding;

// holdout family: <name>/<seq: 8 bytes BE> -> sample (seq grows, so key order
// is age order). state family: holdout/<name> -> next seq and, per class, how
// many labelled samples Split() has seen (the denominator of the share).
constexpr uint8_t kStateVersion = 1;

struct Counters {
  uint64_t next_seq = 0;
  std::map<int64_t, uint64_t> seen;  // labelled samples seen per class
  std::map<int64_t, uint64_t> held;  // held out per class
  uint64_t size = 0;
  // Keys (seq) of each class's held-out samples, oldest first: what a full
  // set evicts to make room for a class with fewer samples. In memory only
  // (rebuilt from the keys at Restore).
  std::map<int64_t, std::deque<uint64_t>> seqs;
};

class HoldoutSetImpl final : public HoldoutSet {
 public:
  HoldoutSetImpl(storage::SampleStore* store, const HoldoutOptions& options)
      : store_(store), options_(options), prefix_(options.name + "/"),
        state_key_("holdout/" + options.name) {}

  Status Restore() {
    std::lock_guard<std::mutex> serial(write_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    Counters c;
    Result<std::optional<std::string>> got = store_->Get(Family::kState, state_key_);
    if (!got.ok()) return got.status();
    const bool has_record = got->has_value();
    const std::string record = has_record ? **got : std::string();
    if (has_record && !DecodeCounters(record, &c)) {
      LOG(kError) << "holdout " << options_.name << ": unreadable counters record; rebuilding";
      c = Counters();
    }
    Status st = store_->Scan(Family::kHoldout, prefix_, [&](std::string_view k, std::string_view v) {
      if (k.substr(0, prefix_.size()) != prefix_) return false;
      std::optional<uint64_t> seq;
      if (k.size() == prefix_.size() + 8) {
        seq = coding::GetBigEndian64(k.substr(prefix_.size()));
        c.next_seq = std::max(c.next_seq, *seq + 1);
      }
      Result<storage::Sample> s = storage::DecodeSample(v);
      if (!s.ok() || !s->label) {
        LOG(kError) << "holdout " << options_.name << ": skipping unreadable record";
        return true;
      }
      c.held[*s->label] += 1;
      c.size += 1;
      if (seq) c.seqs[*s->label].push_back(*seq);  // keys come in seq order
      return true;
    });
    RETURN_IF_ERROR(st.WithContext("holdout " + options_.name));
    for (auto& [cls, n] : c.held) c.seen[cls] = std::max(c.seen[cls], n);
    counters_ = std::move(c);
    return Status::Ok();
  }

  Result<std::vector<storage::Sample>> Split(std::vector<storage::Sample> samples,
                                             const AlsoWrite& also) override {
    // Held across the store write; the readers take only mu_, so a write
    // stalled in RocksDB never blocks a status read (GET /v1/learner).
    std::lock_guard<std::mutex> serial(write_mu_);
    Counters next = counters_;
    std::vector<Mutation> m;
    std::vector<storage::Sample> train;
    std::vector<bool> held_out(samples.size(), false);
    train.reserve(samples.size());
    for (size_t i = 0; i < samples.size(); ++i) {
      storage::Sample& s = samples[i];
      if (!s.label) {
        train.push_back(std::move(s));
        continue;
      }
      int64_t cls = *s.label;
      uint64_t seen = ++next.seen[cls];
      uint64_t held = next.held[cls];
      // Hold this one out if the class would otherwise fall below its share.
      bool hold = static_cast<double>(held + 1) <= options_.fraction * static_cast<double>(seen) + 1e-9;
      if (hold && next.size >= options_.max_samples) {
        // Full: a class with fewer held-out samples than the largest one takes
        // the place of that class's oldest, so classes that arrive late are
        // judged on as many samples as early ones.
        int64_t largest = cls;
        for (const auto& [k, n] : next.held) {
          if (n > next.held[largest]) largest = k;
        }
        hold = next.held[largest] > held + 1 && !next.seqs[largest].empty();
        if (hold) {
          m.push_back({Family::kHoldout, Key(next.seqs[largest].front()), std::nullopt});
          next.seqs[largest].pop_front();
          next.held[largest] -= 1;
          next.size -= 1;
        }
      }
      if (!hold) {
        train.push_back(std::move(s));
        continue;
      }
      Result<std::string> v = storage::EncodeSample(s);
      if (!v.ok()) return v.status().WithContext("sample " + std::to_string(i));
      next.seqs[cls].push_back(next.next_seq);
      m.push_back({Family::kHoldout, Key(next.next_seq++), std::move(v).value()});
      held_out[i] = true;
      next.held[cls] += 1;
      next.size += 1;
    }
    m.push_back({Family::kState, state_key_, EncodeCounters(next)});
    if (also) {
      for (Mutation& x : also(held_out)) m.push_back(std::move(x));
    }
    RETURN_IF_ERROR(store_->Apply(m).WithContext("holdout " + options_.name));
    std::lock_guard<std::mutex> lock(mu_);
    counters_ = std::move(next);
    return train;
  }

  Status Add(std::span<const storage::Sample> samples) override {
    std::lock_guard<std::mutex> serial(write_mu_);
    if (counters_.size + samples.size() > options_.max_samples) {
      return Status::ResourceExhausted("holdout " + options_.name + " would exceed " +
                                       std::to_string(options_.max_samples) + " samples");
    }
    Counters next = counters_;
    std::vector<Mutation> m;
    for (size_t i = 0; i < samples.size(); ++i) {
      if (!samples[i].label) {
        return Status::InvalidArgument("sample " + std::to_string(i) + " has no label");
      }
      ASSIGN_OR_RETURN(std::string v, storage::EncodeSample(samples[i]));
      next.seqs[*samples[i].label].push_back(next.next_seq);
      m.push_back({Family::kHoldout, Key(next.next_seq++), std::move(v)});
      next.held[*samples[i].label] += 1;
      next.seen[*samples[i].label] += 1;
      next.size += 1;
    }
    m.push_back({Family::kState, state_key_, EncodeCounters(next)});
    RETURN_IF_ERROR(store_->Apply(m).WithContext("holdout " + options_.name));
    std::lock_guard<std::mutex> lock(mu_);
    counters_ = std::move(next);
    return Status::Ok();
  }

  Result<std::vector<storage::Sample>> All() override {
    std::vector<storage::Sample> out;
    Status st = store_->Scan(Family::kHoldout, prefix_, [&](std::string_view k, std::string_view v) {
      if (k.substr(0, prefix_.size()) != prefix_) return false;
      Result<storage::Sample> s = storage::DecodeSample(v);
      if (!s.ok()) {
        LOG(kError) << "holdout " << options_.name << ": skipping unreadable record: "
                    << s.status().ToString();
        return true;
      }
      out.push_back(std::move(s).value());
      return true;
    });
    RETURN_IF_ERROR(st);
    return out;
  }

  uint64_t size() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_.size;
  }
  std::map<int64_t, uint64_t> ClassCounts() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_.held;
  }

  uint64_t generation() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_.next_seq;
  }

 private:
  std::string Key(uint64_t seq) const {
    std::string k = prefix_;
    coding::PutBigEndian64(&k, seq);
    return k;
  }

  static std::string EncodeCounters(const Counters& c) {
    std::string out;
    out.push_back(static_cast<char>(kStateVersion));
    coding::PutVarint64(&out, c.next_seq);
    PutClassCounts(&out, c.seen);
    return out;
  }

  // Fills next_seq and seen; held and size come from the contents.
  static bool DecodeCounters(std::string_view in, Counters* c) {
    coding::Reader r(in);
    uint8_t version;
    if (!r.GetByte(&version) || version != kStateVersion || !r.GetVarint64(&c->next_seq) ||
        !GetClassCounts(&r, &c->seen)) {
      return false;
    }
    return r.empty();
  }

  storage::SampleStore* store_;
  const HoldoutOptions options_;
  const std::string prefix_;
  const std::string state_key_;
  std::mutex write_mu_;  // serialises the writers (Restore, Split, Add)
  mutable std::mutex mu_;
  // Written under both mutexes, so a writer may read it holding write_mu_
  // alone; readers hold mu_.
  Counters counters_;
};

}  // namespace

Result<std::unique_ptr<HoldoutSet>> HoldoutSet::Open(storage::SampleStore* store,
                                                     const HoldoutOptions& options) {
  if (store == nullptr) return Status::InvalidArgument("holdout: store is null");
  if (options.name.empty() || options.name.find('/') != std::string::npos) {
    return Status::InvalidArgument("holdout: name must be non-empty and without '/'");
  }
  if (!(options.fraction >= 0.0 && options.fraction <= 1.0)) {
    return Status::InvalidArgument("holdout: fraction must be in [0, 1]");
  }
  auto set = std::make_unique<HoldoutSetImpl>(store, options);
  RETURN_IF_ERROR(set->Restore());
  return std::unique_ptr<HoldoutSet>(std::move(set));
}

}  // namespace distilld::replaybuffer
