// ReplayBuffer and HoldoutSet: what the learner keeps of the past.
//
// ReplayBuffer is a bounded sample of everything offered, persisted through a
// SampleStore ("buffer" family for contents, "state" family for counters).
// Each Offer() writes its contents changes and the new counters in one atomic
// Apply(), so after a crash the buffer is exactly the state after some
// completed Offer(). Open() restores it by scanning only the buffer family.
// The contents are also kept decoded in memory (about max_bytes at most), so
// Sample() never reads the disk.
//
// Policies:
//   kReservoir      Algorithm R over every sample ever offered: each of the
//                   `seen` samples is in the buffer with probability cap/seen.
//   kClassBalanced  capacity split evenly over the classes seen so far, one
//                   reservoir per class; unlabelled samples are filed under the
//                   teacher's predicted class (Sample::EffectiveClass). When a
//                   new class appears, larger classes are shrunk by evicting
//                   uniformly at random.
// Samples with no effective class (no label, no teacher logits) are refused by
// kClassBalanced (InvalidArgument) and accepted by kReservoir.
//
// Thread-safety: all methods may be called concurrently (internal mutex); the
// learner thread is the only writer in the daemon. Does not own the store.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/sample.h"
#include "storage/sample_store.h"

namespace distilld::replaybuffer {

enum class Policy { kReservoir, kClassBalanced };

struct ReplayBufferOptions {
  // Maximum number of samples held. Default 2000 (the class-incremental
  // benchmark's budget).
  size_t capacity = 2000;
  // Maximum total encoded bytes held; a sample that would exceed it evicts
  // others first. Default 64 MiB.
  size_t max_bytes = 64u << 20;
  Policy policy = Policy::kClassBalanced;
  // Key prefix inside the store's families, so tests can hold several buffers.
  std::string name = "replay";
};

struct BufferStats {
  uint64_t size = 0;
  uint64_t capacity = 0;
  uint64_t bytes = 0;
  uint64_t seen = 0;                        // samples ever offered
  std::map<int64_t, uint64_t> class_counts;  // in the buffer; -1 = no class
  std::map<int64_t, uint64_t> class_seen;    // ever offered
};

class ReplayBuffer {
 public:
  // `store` is not owned and must outlive the buffer.
  static Result<std::unique_ptr<ReplayBuffer>> Open(storage::SampleStore* store,
                                                    const ReplayBufferOptions& options);
  virtual ~ReplayBuffer() = default;

  // Considers each sample for admission under the policy, then persists the
  // result atomically. On error nothing changes (in memory or on disk).
  Status Offer(std::span<const storage::Sample> samples, std::mt19937_64& rng) {
    return Offer(samples, rng, {});
  }
  // As above, and `also` (the caller's own records, e.g. the learner's cursor
  // and the deletion of the consumed incoming samples) goes into the same
  // atomic write, so a crash can never leave the samples both offered and
  // still pending.
  virtual Status Offer(std::span<const storage::Sample> samples, std::mt19937_64& rng,
                       std::span<const storage::Mutation> also) = 0;
  // min(n, size) samples drawn uniformly without replacement.
  virtual Result<std::vector<storage::Sample>> Sample(size_t n, std::mt19937_64& rng) = 0;
  virtual BufferStats Stats() const = 0;
};

struct HoldoutOptions {
  // Share of labelled samples set aside, per class. Default 10%.
  double fraction = 0.1;
  // Upper bound on held-out samples in total. Default 5000. When full, a
  // sample of a class with fewer held-out samples than the largest class
  // replaces that class's oldest one (the set stays balanced as new classes
  // arrive); Add() refuses beyond it.
  size_t max_samples = 5000;
  std::string name = "holdout";
};

// The held-out evaluation set: a stratified share of labelled samples that is
// never used for training. Persisted in the store's "holdout" family.
// Thread-safe (internal mutex). Does not own the store.
class HoldoutSet {
 public:
  static Result<std::unique_ptr<HoldoutSet>> Open(storage::SampleStore* store,
                                                  const HoldoutOptions& options);
  virtual ~HoldoutSet() = default;

  // Splits a batch: for each class, enough labelled samples are held out (and
  // stored durably) to keep that class's held-out share at `fraction`; the
  // rest, and every unlabelled sample, are returned for training, in order.
  Result<std::vector<storage::Sample>> Split(std::vector<storage::Sample> samples) {
    return Split(std::move(samples), nullptr);
  }
  // Given held[i] (whether samples[i] was held out), the caller's records to
  // write in the same atomic batch as the split: the learner deletes the
  // held-out samples from "incoming" and records how far it has split, so a
  // crash can never leave a sample both held out and trainable.
  using AlsoWrite = std::function<std::vector<storage::Mutation>(const std::vector<bool>& held)>;
  virtual Result<std::vector<storage::Sample>> Split(std::vector<storage::Sample> samples,
                                                     const AlsoWrite& also) = 0;
  // Adds samples to the held-out set directly (tests, offline tools).
  virtual Status Add(std::span<const storage::Sample> samples) = 0;
  virtual Result<std::vector<storage::Sample>> All() = 0;
  virtual uint64_t size() const = 0;
  virtual std::map<int64_t, uint64_t> ClassCounts() const = 0;
  // Grows by one with every sample ever held out (persisted): two
  // evaluations with the same generation ran on the same set.
  virtual uint64_t generation() const = 0;
};

}  // namespace distilld::replaybuffer
