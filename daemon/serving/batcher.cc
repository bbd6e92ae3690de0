#include "daemon/serving/batcher.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

// c10 (glog) defines LOG too; ours wins in this file.
#undef LOG
#include "common/log.h"

namespace distilld::daemon {
namespace {

struct Queued {
  InferTask task;
  int64_t enqueued_us = 0;
};

class BatcherImpl final : public Batcher {
 public:
  explicit BatcherImpl(const BatcherOptions& options) : options_(options), limits_(options.limits) {
    if (options_.clock == nullptr) options_.clock = Clock::Real();
    sample_elements_ = 1;
    for (int64_t d : options_.input_shape) sample_elements_ *= d;
    if (options_.metrics != nullptr) {
      auto* m = options_.metrics;
      queue_seconds_ = m->RegisterHistogram("distilld_batch_queue_duration_seconds",
                                            "Time a request waited in the batching queue.",
                                            ExponentialBuckets(10e-6, 2, 16))
                           ->Get();
      batch_size_ = m->RegisterHistogram("distilld_batch_size", "Samples per forward pass.",
                                         {1, 2, 4, 8, 16, 32, 64, 128, 256})
                        ->Get();
      forward_seconds_ = m->RegisterHistogram("distilld_batch_forward_duration_seconds",
                                              "Duration of one batched forward pass.",
                                              ExponentialBuckets(10e-6, 2, 16))
                             ->Get();
      rejected_ = m->RegisterCounter("distilld_batch_rejected_total",
                                     "Inference requests refused because the queue was full.")
                      ->Get();
      queued_gauge_ = m->RegisterGauge("distilld_batch_queued_samples", "Samples waiting in the queue.")->Get();
    }
    const int n = options_.inference_threads;
    for (int i = 0; i < n; ++i) beats_.push_back(std::make_unique<Heartbeat>());
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this, i] { Loop(beats_[static_cast<size_t>(i)].get()); });
    }
  }

  ~BatcherImpl() override { Stop(); }

  Status Submit(InferTask task) override {
    if (task.batch <= 0 || static_cast<int64_t>(task.input.size()) != task.batch * sample_elements_) {
      return Status::InvalidArgument("inference task with inconsistent batch and input size");
    }
    bool notify = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return Status::Unavailable("server is shutting down");
      if (queued_samples_ + task.batch > limits_.queue_capacity) {
        if (rejected_ != nullptr) rejected_->Increment();
        return Status::Unavailable("inference queue is full (" + std::to_string(limits_.queue_capacity) +
                                   " samples)");
      }
      queued_samples_ += task.batch;
      queue_.push_back({std::move(task), options_.clock->MonotonicMicros()});
      peak_outstanding_ = std::max(peak_outstanding_, running_requests_ + static_cast<int64_t>(queue_.size()));
      // Wake an inference thread only when there is something new for it to
      // decide: the first request starts the delay clock, and a full batch
      // or the expected number of requests ends it. Waking it for every
      // request in between costs a futex round trip per request and decides
      // nothing.
      if (inline_mode()) {
        notify = !drain_posted_;
        drain_posted_ = true;
      } else {
        notify = queue_.size() == 1 || queued_samples_ >= limits_.max_batch_size ||
                 (limits_.early_dispatch && static_cast<int64_t>(queue_.size()) == TargetLocked());
      }
      if (queued_gauge_ != nullptr) queued_gauge_->Set(static_cast<double>(queued_samples_));
    }
    if (!notify) return Status::Ok();
    if (inline_mode()) {
      options_.run_inline([this] { DrainInline(); });
    } else {
      cv_.notify_one();
    }
    return Status::Ok();
  }

  void UpdateLimits(const BatchingLimits& limits) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      limits_ = limits;
    }
    cv_.notify_all();
  }

  BatchingLimits limits() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return limits_;
  }

  int64_t queued_samples() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return queued_samples_;
  }

  uint64_t completed_requests() const override { return completed_.load(std::memory_order_relaxed); }

  int64_t early_dispatch_target() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return TargetLocked();
  }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    std::lock_guard<std::mutex> lock(join_mu_);
    for (auto& t : threads_) t.join();
    threads_.clear();
    // Inline mode has no threads to drain the queue: answer the rest here.
    std::vector<Queued> batch;
    std::vector<float> input;
    while (TakeBatch(&batch)) {
      Run(batch, &input);
      batch.clear();
    }
  }

  std::vector<const Heartbeat*> heartbeats() const override {
    std::vector<const Heartbeat*> out;
    for (const auto& b : beats_) out.push_back(b.get());
    return out;
  }

 private:
  // Takes the next batch, waiting for the delay to pass or the batch to
  // fill. Returns false when stopping and the queue is empty.
  bool NextBatch(std::vector<Queued>* batch, Heartbeat* beat) {
    const auto beat_period = std::chrono::milliseconds(std::max<int64_t>(1, options_.heartbeat_period_ms));
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      // Timed, so an idle thread still proves it is alive.
      while (!cv_.wait_for(lock, beat_period, [this] { return stopping_ || !queue_.empty(); })) beat->Beat();
      beat->Beat();
      if (queue_.empty()) return false;  // stopping and drained
      // Wait for more samples until the oldest request's deadline, unless
      // the batch is already full, the expected requests are all here, or
      // we are draining for shutdown.
      while (!stopping_ && !queue_.empty() && queued_samples_ < limits_.max_batch_size) {
        if (limits_.early_dispatch && static_cast<int64_t>(queue_.size()) >= TargetLocked()) break;
        const int64_t deadline_us = queue_.front().enqueued_us + limits_.max_queue_delay_us;
        const int64_t now = options_.clock->MonotonicMicros();
        if (now >= deadline_us) break;
        cv_.wait_for(lock, std::chrono::microseconds(deadline_us - now));
      }
      if (queue_.empty()) continue;  // another inference thread took it
      TakeBatchLocked(batch);
      // Learn from the most requests that were outstanding (queued or
      // running) since the previous batch left: closed-loop clients keep
      // about that many requests in the system, however they split into
      // batches, so batches merge back instead of staying split.
      requests_per_batch_ += kRequestsAlpha * (static_cast<double>(peak_outstanding_) - requests_per_batch_);
      peak_outstanding_ = running_requests_ + static_cast<int64_t>(queue_.size());
      return true;
    }
  }

  bool inline_mode() const { return options_.inference_threads == 0; }

  // Moves the oldest queued requests, up to max_batch_size samples, into
  // *batch and counts them as running. False if the queue is empty.
  bool TakeBatch(std::vector<Queued>* batch) {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty()) return false;
    TakeBatchLocked(batch);
    return true;
  }

  void TakeBatchLocked(std::vector<Queued>* batch) {
    int64_t samples = 0;
    while (!queue_.empty()) {
      const int64_t n = queue_.front().task.batch;
      // A request larger than max_batch_size runs alone rather than never.
      if (samples > 0 && samples + n > limits_.max_batch_size) break;
      samples += n;
      batch->push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    queued_samples_ -= samples;
    if (queued_gauge_ != nullptr) queued_gauge_->Set(static_cast<double>(queued_samples_));
    running_requests_ += static_cast<int64_t>(batch->size());
  }

  // Inline mode: one batch on the calling (I/O) thread. If requests remain
  // beyond max_batch_size, the next batch is posted rather than run here, so
  // the loop serves its ready sockets in between (and a shared loop's other
  // threads may take it). The OpenMP setting and the buffers are per thread;
  // a process has one batcher.
  void DrainInline() {
    thread_local bool threads_set = false;
    if (!threads_set) {
      // OpenMP thread count belongs to the calling thread (see ARCHITECTURE.md).
      at::set_num_threads(std::max(1, options_.intra_op_threads));
      threads_set = true;
    }
    thread_local std::vector<Queued> batch;
    thread_local std::vector<float> input;
    bool more = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drain_posted_ = false;
      if (queue_.empty()) return;
      TakeBatchLocked(&batch);
      more = !queue_.empty();
      drain_posted_ = more;
    }
    if (more) options_.run_inline([this] { DrainInline(); });
    Run(batch, &input);
    batch.clear();
  }

  void Loop(Heartbeat* beat) {
    // OpenMP thread count belongs to the calling thread (see ARCHITECTURE.md).
    at::set_num_threads(std::max(1, options_.intra_op_threads));
    std::vector<Queued> batch;
    std::vector<float> input;
    while (true) {
      batch.clear();
      if (!NextBatch(&batch, beat)) return;
      // Fresh queue: other threads may already start on the next batch.
      cv_.notify_one();
      Run(batch, &input);
      beat->Beat();
    }
  }

  void Run(std::vector<Queued>& batch, std::vector<float>* input) {
    const int64_t start_us = options_.clock->MonotonicMicros();
    std::shared_ptr<const ServedModel> active = options_.models->Active();
    // Requests pinned to a version other than the active one run separately.
    std::vector<Queued*> main;
    for (auto& q : batch) {
      if (queue_seconds_ != nullptr) queue_seconds_->Observe(static_cast<double>(start_us - q.enqueued_us) / 1e6);
      if (q.task.version && (!active || *q.task.version != active->version())) {
        auto pinned = options_.models->Find(*q.task.version);
        if (!pinned) {
          Complete(q, Status::NotFound("model version " + std::to_string(*q.task.version) + " is not loaded"),
                   start_us);
          continue;
        }
        std::vector<Queued*> one = {&q};
        Forward(*pinned, one, input, start_us);
        continue;
      }
      main.push_back(&q);
    }
    if (main.empty()) return;
    if (!active) {
      for (Queued* q : main) Complete(*q, Status::Unavailable("no model loaded"), start_us);
      return;
    }
    Forward(*active, main, input, start_us);
  }

  void Forward(const ServedModel& model, const std::vector<Queued*>& reqs, std::vector<float>* input,
               int64_t start_us) {
    const int64_t assemble_us = options_.clock->MonotonicMicros();
    int64_t samples = 0;
    for (Queued* q : reqs) samples += q->task.batch;
    input->resize(static_cast<size_t>(samples * sample_elements_));
    size_t offset = 0;
    for (Queued* q : reqs) {
      std::memcpy(input->data() + offset, q->task.input.data(), q->task.input.size() * sizeof(float));
      offset += q->task.input.size();
    }
    std::vector<int64_t> shape = {samples};
    shape.insert(shape.end(), options_.input_shape.begin(), options_.input_shape.end());
    at::Tensor in = torch::from_blob(input->data(), shape, torch::kFloat);
    const int64_t t0 = options_.clock->MonotonicMicros();
    Result<at::Tensor> out = model.Forward(in);
    const int64_t t1 = options_.clock->MonotonicMicros();
    if (batch_size_ != nullptr) batch_size_->Observe(static_cast<double>(samples));
    if (forward_seconds_ != nullptr) forward_seconds_->Observe(static_cast<double>(t1 - t0) / 1e6);
    if (out.ok() && (out->dim() != 2 || out->size(0) != samples || out->size(1) != options_.classes)) {
      out = Status::Internal("model returned shape " + c10::str(out->sizes()));
    }
    if (!out.ok()) {
      LOG(kWarning) << "forward pass of version " << model.version() << " failed: " << out.status().ToString();
      for (Queued* q : reqs) Complete(*q, out.status(), start_us);
      return;
    }
    const float* logits = out->data_ptr<float>();
    int64_t row = 0;
    std::vector<InferOutput> outs(reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      InferOutput& o = outs[i];
      o.version = model.version();
      o.queue_us = start_us - reqs[i]->enqueued_us;
      o.infer_us = t1 - t0;
      o.logits.assign(logits + row * options_.classes, logits + (row + reqs[i]->task.batch) * options_.classes);
      row += reqs[i]->task.batch;
    }
    // Recorded before any answer leaves: a client that reads the statistics
    // after its response finds its request's forward pass in them.
    if (options_.model_stats != nullptr) {
      options_.model_stats->RecordExecution(model.version(), samples, t0 - assemble_us, t1 - t0,
                                            options_.clock->MonotonicMicros() - t1);
    }
    for (size_t i = 0; i < reqs.size(); ++i) Complete(*reqs[i], std::move(outs[i]), start_us);
  }

  // Requests per batch an idle thread waits for before the delay is up.
  int64_t TargetLocked() const { return std::max<int64_t>(1, std::llround(requests_per_batch_)); }

  void Complete(Queued& q, Result<InferOutput> result, int64_t) {
    {
      // No longer outstanding once its answer is on the way: the client may
      // send its next request before this batch's other answers are out.
      std::lock_guard<std::mutex> lock(mu_);
      --running_requests_;
    }
    completed_.fetch_add(1, std::memory_order_relaxed);
    auto done = std::move(q.task.done);
    if (done) done(std::move(result));
  }

  BatcherOptions options_;
  int64_t sample_elements_ = 1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  BatchingLimits limits_;          // guarded by mu_
  std::deque<Queued> queue_;       // guarded by mu_
  int64_t queued_samples_ = 0;     // guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  bool drain_posted_ = false;
  std::atomic<uint64_t> completed_{0};      // inline mode: a DrainInline is pending; guarded by mu_
  // Moving average of requests per dispatched batch; weight of the newest.
  static constexpr double kRequestsAlpha = 0.5;
  double requests_per_batch_ = 1.0;  // guarded by mu_
  int64_t running_requests_ = 0;     // in forward passes now; guarded by mu_
  int64_t peak_outstanding_ = 0;     // most queued + running since the last batch; guarded by mu_
  std::mutex join_mu_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<Heartbeat>> beats_;  // one per thread; fixed before they start
  Histogram* queue_seconds_ = nullptr;
  Histogram* batch_size_ = nullptr;
  Histogram* forward_seconds_ = nullptr;
  Counter* rejected_ = nullptr;
  Gauge* queued_gauge_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<Batcher>> Batcher::Create(const BatcherOptions& options) {
  if (options.models == nullptr) return Status::InvalidArgument("BatcherOptions.models is required");
  if (options.limits.max_batch_size < 1) return Status::InvalidArgument("max_batch_size must be >= 1");
  if (options.limits.queue_capacity < 1) return Status::InvalidArgument("queue_capacity must be >= 1");
  if (options.inference_threads < 0) return Status::InvalidArgument("inference_threads must be >= 0");
  if (options.inference_threads == 0 && !options.run_inline) {
    return Status::InvalidArgument("inference_threads 0 needs BatcherOptions.run_inline");
  }
  return std::unique_ptr<Batcher>(new BatcherImpl(options));
}

}  // namespace distilld::daemon
