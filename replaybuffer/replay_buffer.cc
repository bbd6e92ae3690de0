#include "replaybuffer/replay_buffer.h"

#include <algorithm>
#include <climits>
#include <mutex>
#include <numeric>
#include <set>
#include <utility>

#include "common/log.h"
#include "replaybuffer/class_counts.h"
#include "storage/coding.h"

namespace distilld::replaybuffer {
namespace {

using storage::Family;
using storage::Mutation;
namespace coding = storage::coding;

// On disk, the buffer is a set of groups (one per class under kClassBalanced,
// a single one under kReservoir), each an array of slots:
//   buffer family: <name>/<group: 8 bytes BE, sign bit flipped><slot: 4 bytes BE> -> sample
//   state family:  replaybuffer/<name> -> counters
// Keys carry the slot position, so Open() rebuilds every array in exactly the
// order it had in memory, and a reopened buffer continues with the same random
// choices as one that never closed.
constexpr uint8_t kStateVersion = 1;
constexpr int64_t kReservoirGroup = INT64_MIN;
constexpr int64_t kNoClass = -1;
// Open() trims a buffer whose options shrank with this fixed seed.
constexpr uint64_t kTrimSeed = 0x5eed;

struct Entry {
  std::shared_ptr<const storage::Sample> sample;
  uint64_t bytes = 0;  // encoded size
  int64_t cls = kNoClass;
};

using Slot = std::pair<int64_t, uint32_t>;  // (group, index)

struct State {
  std::map<int64_t, std::vector<Entry>> groups;
  uint64_t seen = 0;
  std::map<int64_t, uint64_t> class_seen;
  uint64_t size = 0;
  uint64_t bytes = 0;
  std::map<int64_t, uint64_t> class_counts;
};

uint64_t Uniform(std::mt19937_64& rng, uint64_t n) {  // in [0, n)
  return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng);
}

// Mutations of one State, remembering which slots changed so that only those
// are written.
class Editor {
 public:
  Editor(State* s, const ReplayBufferOptions& o) : s_(s), o_(o) {}

  void Push(int64_t group, Entry e) {
    auto& g = s_->groups[group];
    Account(e, +1);
    g.push_back(std::move(e));
    touched_.insert({group, static_cast<uint32_t>(g.size() - 1)});
  }
  void Replace(int64_t group, uint32_t j, Entry e) {
    auto& g = s_->groups[group];
    Account(g[j], -1);
    Account(e, +1);
    g[j] = std::move(e);
    touched_.insert({group, j});
  }
  // Removes slot j by moving the group's last entry into it. Returns the
  // slot that used to be last (now gone), so a caller tracking it can update.
  void RemoveAt(int64_t group, uint32_t j, std::optional<Slot>* tracked) {
    auto it = s_->groups.find(group);
    auto& g = it->second;
    uint32_t last = static_cast<uint32_t>(g.size() - 1);
    Account(g[j], -1);
    if (j != last) g[j] = std::move(g[last]);
    g.pop_back();
    touched_.insert({group, j});
    touched_.insert({group, last});
    if (tracked && *tracked && **tracked == Slot{group, last}) **tracked = Slot{group, j};
    if (g.empty()) s_->groups.erase(it);
  }

  uint64_t Quota(int64_t cls) const {
    uint64_t k = s_->class_seen.size();
    if (k == 0) return o_.capacity;
    uint64_t idx = static_cast<uint64_t>(std::distance(s_->class_seen.begin(), s_->class_seen.find(cls)));
    return o_.capacity / k + (idx < o_.capacity % k ? 1 : 0);
  }

  // kClassBalanced: evicts uniformly at random from every group above its
  // quota (after a new class appeared, or the capacity shrank).
  void Rebalance(std::mt19937_64& rng, std::optional<Slot>* tracked) {
    std::vector<int64_t> keys;
    for (auto& [c, g] : s_->groups) keys.push_back(c);
    for (int64_t c : keys) {
      uint64_t q = Quota(c);
      while (s_->groups.count(c) && s_->groups[c].size() > q) {
        RemoveAt(c, static_cast<uint32_t>(Uniform(rng, s_->groups[c].size())), tracked);
      }
    }
  }

  // Evicts uniformly random entries (never *keep) until the byte cap holds.
  void EnforceBytes(std::mt19937_64& rng, std::optional<Slot>* keep) {
    while (s_->bytes > o_.max_bytes) {
      uint64_t candidates = s_->size - (*keep ? 1 : 0);
      if (candidates == 0) return;  // cannot happen: oversized samples are never admitted
      uint64_t r = Uniform(rng, candidates);
      for (auto& [c, g] : s_->groups) {
        uint64_t skip = (*keep && (*keep)->first == c) ? 1 : 0;
        if (r < g.size() - skip) {
          uint32_t j = static_cast<uint32_t>(r);
          if (skip && j >= (*keep)->second) ++j;
          RemoveAt(c, j, keep);
          break;
        }
        r -= g.size() - skip;
      }
    }
  }

  const std::set<Slot>& touched() const { return touched_; }
  void TouchAll() {
    for (auto& [c, g] : s_->groups) {
      for (uint32_t j = 0; j < g.size(); ++j) touched_.insert({c, j});
    }
  }

 private:
  void Account(const Entry& e, int sign) {
    if (sign > 0) {
      s_->size += 1;
      s_->bytes += e.bytes;
      s_->class_counts[e.cls] += 1;
    } else {
      s_->size -= 1;
      s_->bytes -= e.bytes;
      if (--s_->class_counts[e.cls] == 0) s_->class_counts.erase(e.cls);
    }
  }

  State* s_;
  const ReplayBufferOptions& o_;
  std::set<Slot> touched_;
};

class ReplayBufferImpl final : public ReplayBuffer {
 public:
  ReplayBufferImpl(storage::SampleStore* store, const ReplayBufferOptions& options)
      : store_(store), options_(options), prefix_(options.name + "/"),
        state_key_("replaybuffer/" + options.name) {}

  Status Restore() {
    std::lock_guard<std::mutex> serial(write_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    State s;
    uint8_t stored_policy = 0;
    bool have_counters = false;
    Result<std::optional<std::string>> got = store_->Get(Family::kState, state_key_);
    if (!got.ok()) return got.status();
    // Copied out of the optional: GCC 12 warns (falsely) on reading through it.
    const bool has_record = got->has_value();
    const std::string record = has_record ? **got : std::string();
    if (has_record) {
      if (DecodeCounters(record, &s, &stored_policy)) {
        have_counters = true;
      } else {
        LOG(kError) << "replay buffer " << options_.name
                    << ": unreadable counters record; rebuilding them from the contents";
        s.seen = 0;
        s.class_seen.clear();
      }
    }

    // Contents, in key order = (group, slot) order.
    std::vector<std::string> old_keys;
    std::vector<std::pair<Slot, Entry>> loaded;
    bool damaged = false;
    Status st = store_->Scan(Family::kBuffer, prefix_, [&](std::string_view k, std::string_view v) {
      if (k.substr(0, prefix_.size()) != prefix_) return false;
      old_keys.emplace_back(k);
      if (k.size() != prefix_.size() + 12) {
        LOG(kError) << "replay buffer " << options_.name << ": skipping malformed key";
        damaged = true;
        return true;
      }
      Result<storage::Sample> sample = storage::DecodeSample(v);
      if (!sample.ok()) {
        LOG(kError) << "replay buffer " << options_.name
                    << ": skipping unreadable record: " << sample.status().ToString();
        damaged = true;
        return true;
      }
      int64_t group = static_cast<int64_t>(coding::GetBigEndian64(k.substr(prefix_.size(), 8)) ^
                                           (uint64_t{1} << 63));
      uint32_t slot = coding::GetBigEndian32(k.substr(prefix_.size() + 8, 4));
      Entry e;
      e.bytes = v.size();
      e.cls = sample->EffectiveClass().value_or(kNoClass);
      e.sample = std::make_shared<const storage::Sample>(std::move(sample).value());
      loaded.push_back({{group, slot}, std::move(e)});
      return true;
    });
    RETURN_IF_ERROR(st.WithContext("replay buffer " + options_.name));

    bool policy_changed = have_counters && stored_policy != PolicyByte();
    Editor ed(&s, options_);
    for (auto& [slot, e] : loaded) {
      int64_t group = GroupFor(e.cls);
      if (!policy_changed && (group != slot.first || s.groups[group].size() != slot.second)) {
        damaged = true;  // a hole left by a skipped record, or a foreign group
      }
      ed.Push(group, std::move(e));
    }
    if (!have_counters) {
      s.seen = s.size;
      s.class_seen = s.class_counts;
    }
    // Every class in the buffer was seen; keep the counters consistent even
    // if the counters record was lost.
    for (auto& [c, n] : s.class_counts) s.class_seen[c] = std::max(s.class_seen[c], n);
    s.seen = std::max(s.seen, s.size);

    uint64_t before = s.size;
    std::mt19937_64 rng(kTrimSeed);
    std::optional<Slot> none;
    if (options_.policy == Policy::kReservoir) {
      while (s.size > options_.capacity) {
        ed.RemoveAt(kReservoirGroup, static_cast<uint32_t>(Uniform(rng, s.size)), &none);
      }
    } else {
      ed.Rebalance(rng, &none);
    }
    ed.EnforceBytes(rng, &none);

    if (damaged || policy_changed || (!have_counters && !loaded.empty()) || s.size != before) {
      LOG(kWarning) << "replay buffer " << options_.name << ": rewriting " << s.size
                    << " records (damaged=" << damaged << ", policy_changed=" << policy_changed
                    << ", trimmed=" << (before - s.size) << ")";
      std::vector<Mutation> m;
      for (auto& k : old_keys) m.push_back({Family::kBuffer, k, std::nullopt});
      ed.TouchAll();
      RETURN_IF_ERROR(AppendWrites(s, ed.touched(), &m));
      RETURN_IF_ERROR(store_->Apply(m));
    }
    state_ = std::move(s);
    return Status::Ok();
  }

  Status Offer(std::span<const storage::Sample> samples, std::mt19937_64& rng,
               std::span<const Mutation> also) override {
    std::vector<uint64_t> sizes(samples.size());
    for (size_t i = 0; i < samples.size(); ++i) {
      if (options_.policy == Policy::kClassBalanced && !samples[i].EffectiveClass()) {
        return Status::InvalidArgument("sample " + std::to_string(i) +
                                       " has neither a label nor teacher logits");
      }
      // The encoded size is what the byte cap counts.
      Result<std::string> e = storage::EncodeSample(samples[i]);
      if (!e.ok()) return e.status().WithContext("sample " + std::to_string(i));
      sizes[i] = e->size();
    }

    // Held across the store write; readers (Stats, Sample) take only mu_,
    // so a write stalled in RocksDB never blocks a status read.
    std::lock_guard<std::mutex> serial(write_mu_);
    State next = state_;  // entries are shared_ptrs: a cheap copy
    Editor ed(&next, options_);
    for (size_t i = 0; i < samples.size(); ++i) {
      int64_t cls = samples[i].EffectiveClass().value_or(kNoClass);
      next.seen += 1;
      bool new_class = next.class_seen[cls]++ == 0;
      std::optional<Slot> admitted;
      // A new class changes every quota, even if this sample is not kept.
      if (options_.policy == Policy::kClassBalanced && new_class) ed.Rebalance(rng, &admitted);
      if (sizes[i] > options_.max_bytes) continue;  // can never fit: seen, not kept
      Entry e{std::make_shared<const storage::Sample>(samples[i]), sizes[i], cls};
      int64_t group = GroupFor(cls);
      uint64_t quota = options_.policy == Policy::kReservoir ? options_.capacity : ed.Quota(cls);
      uint64_t group_seen = options_.policy == Policy::kReservoir ? next.seen : next.class_seen[cls];
      auto git = next.groups.find(group);
      uint64_t have = git == next.groups.end() ? 0 : git->second.size();
      if (have < quota) {
        ed.Push(group, std::move(e));
        admitted = Slot{group, static_cast<uint32_t>(have)};
      } else {
        // Algorithm R: the group_seen-th sample replaces a random slot with
        // probability have / group_seen.
        uint64_t j = Uniform(rng, group_seen);
        if (j < have) {
          ed.Replace(group, static_cast<uint32_t>(j), std::move(e));
          admitted = Slot{group, static_cast<uint32_t>(j)};
        }
      }
      ed.EnforceBytes(rng, &admitted);
    }

    std::vector<Mutation> m;
    RETURN_IF_ERROR(AppendWrites(next, ed.touched(), &m));
    m.insert(m.end(), also.begin(), also.end());
    RETURN_IF_ERROR(store_->Apply(m).WithContext("replay buffer " + options_.name));
    std::lock_guard<std::mutex> lock(mu_);
    state_ = std::move(next);
    return Status::Ok();
  }

  Result<std::vector<storage::Sample>> Sample(size_t n, std::mt19937_64& rng) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<const Entry*> all;
    all.reserve(state_.size);
    for (auto& [c, g] : state_.groups) {
      for (auto& e : g) all.push_back(&e);
    }
    size_t k = std::min(n, all.size());
    std::vector<storage::Sample> out;
    out.reserve(k);
    // Partial Fisher-Yates: the first k positions become a uniform k-subset.
    for (size_t i = 0; i < k; ++i) {
      size_t j = i + Uniform(rng, all.size() - i);
      std::swap(all[i], all[j]);
      out.push_back(*all[i]->sample);
    }
    return out;
  }

  BufferStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    BufferStats b;
    b.size = state_.size;
    b.capacity = options_.capacity;
    b.bytes = state_.bytes;
    b.seen = state_.seen;
    b.class_counts = state_.class_counts;
    b.class_seen = state_.class_seen;
    return b;
  }

 private:
  uint8_t PolicyByte() const { return options_.policy == Policy::kReservoir ? 1 : 2; }
  int64_t GroupFor(int64_t cls) const {
    return options_.policy == Policy::kReservoir ? kReservoirGroup : cls;
  }

  std::string Key(Slot slot) const {
    std::string k = prefix_;
    coding::PutBigEndian64(&k, static_cast<uint64_t>(slot.first) ^ (uint64_t{1} << 63));
    coding::PutBigEndian32(&k, slot.second);
    return k;
  }

  // Puts for live touched slots, deletes for vacated ones, and the counters.
  Status AppendWrites(const State& s, const std::set<Slot>& touched, std::vector<Mutation>* m) {
    for (const Slot& slot : touched) {
      auto it = s.groups.find(slot.first);
      if (it != s.groups.end() && slot.second < it->second.size()) {
        ASSIGN_OR_RETURN(std::string v, storage::EncodeSample(*it->second[slot.second].sample));
        m->push_back({Family::kBuffer, Key(slot), std::move(v)});
      } else {
        m->push_back({Family::kBuffer, Key(slot), std::nullopt});
      }
    }
    m->push_back({Family::kState, state_key_, EncodeCounters(s)});
    return Status::Ok();
  }

  std::string EncodeCounters(const State& s) const {
    std::string out;
    out.push_back(static_cast<char>(kStateVersion));
    out.push_back(static_cast<char>(PolicyByte()));
    coding::PutVarint64(&out, s.seen);
    PutClassCounts(&out, s.class_seen);
    return out;
  }

  static bool DecodeCounters(std::string_view in, State* s, uint8_t* policy) {
    coding::Reader r(in);
    uint8_t version;
    if (!r.GetByte(&version) || version != kStateVersion || !r.GetByte(policy) ||
        !r.GetVarint64(&s->seen) || !GetClassCounts(&r, &s->class_seen)) {
      return false;
    }
    return r.empty();
  }

  storage::SampleStore* store_;
  const ReplayBufferOptions options_;
  const std::string prefix_;
  const std::string state_key_;

  std::mutex write_mu_;  // serialises the writers (Restore, Offer)
  mutable std::mutex mu_;
  // Written under both mutexes, so a writer may read it holding write_mu_
  // alone; readers hold mu_. Equal to what the store holds.
  State state_;
};

}  // namespace

Result<std::unique_ptr<ReplayBuffer>> ReplayBuffer::Open(storage::SampleStore* store,
                                                         const ReplayBufferOptions& options) {
  if (store == nullptr) return Status::InvalidArgument("replay buffer: store is null");
  if (options.name.empty() || options.name.find('/') != std::string::npos) {
    return Status::InvalidArgument("replay buffer: name must be non-empty and without '/'");
  }
  auto buffer = std::make_unique<ReplayBufferImpl>(store, options);
  RETURN_IF_ERROR(buffer->Restore());
  return std::unique_ptr<ReplayBuffer>(std::move(buffer));
}

}  // namespace distilld::replaybuffer
