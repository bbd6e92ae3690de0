// Batcher: dynamic batching of inference requests across connections.
//
// Submit() queues a request (a few samples) and returns at once; inference
// threads, separate from the I/O threads, take requests in arrival order and
// run them as one forward pass of up to max_batch_size samples, waiting at
// most max_queue_delay_us after the oldest queued request for more to
// arrive. The queue is bounded in samples: a request that does not fit is
// refused with Unavailable (HTTP 503) immediately rather than waiting.
//
// Early dispatch (BatchingLimits::early_dispatch, on by default): an idle
// inference thread does not wait out the delay once the queue holds as many
// requests as were recently outstanding at once (a moving average, per
// batch, of the most requests queued or running since the previous batch;
// it starts at 1). Closed-loop clients send their next request only after
// their answer, so N busy clients keep about N requests outstanding: a lone
// client is served at once instead of after max_queue_delay_us, N clients
// once all N requests are in, and fewer arrivals before the deadline lower
// the expectation. While the thread is busy, requests still accumulate and
// the next batch takes all of them (up to max_batch_size).
//
// Inline mode (inference_threads 0) runs batches on the I/O threads
// instead, which saves two thread hand-offs per request; see
// BatcherOptions::run_inline.
//
// Each batch runs on the ModelManager's active version taken when the batch
// starts, so every result names the version that computed it, even while a
// swap happens. A request pinned to a version (…/versions/{v}/infer) runs on
// that version if it is still alive, else fails with NotFound.
//
// Thread-safety: Submit, UpdateLimits and Stop may be called from any
// thread. The batcher owns its threads; the ModelManager and the
// MetricsRegistry are not owned and must outlive it. Completion callbacks run
// on the thread that ran the batch and must be quick (post elsewhere for
// heavy work).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "common/clock.h"
#include "common/heartbeat.h"
#include "common/status.h"
#include "daemon/http/metrics.h"
#include "daemon/serving/model_manager.h"
#include "daemon/serving/model_stats.h"

namespace distilld::daemon {

struct InferOutput {
  int64_t version = 0;          // version that computed the logits
  std::vector<float> logits;    // [batch, classes] row-major
  int64_t queue_us = 0;         // time spent queued
  int64_t infer_us = 0;         // the forward pass it ran in (the whole batch's)
};

struct InferTask {
  int64_t batch = 0;             // samples in `input`
  std::vector<float> input;      // batch * sample elements, row-major
  std::optional<int64_t> version;  // pinned version, if any
  // Called exactly once, on an inference thread (or a thread of run_inline,
  // or Stop's thread).
  std::function<void(Result<InferOutput>)> done;
};

// The fields SIGHUP may change.
struct BatchingLimits {
  int max_batch_size = 64;           // samples per forward pass
  int64_t max_queue_delay_us = 500;  // wait for more after the oldest request
  int queue_capacity = 4096;         // samples queued; Unavailable beyond
  // Dispatch before the delay once the queue holds the expected number of
  // requests (see above). false: always wait for a full batch or the delay.
  bool early_dispatch = true;
};

struct BatcherOptions {
  BatchingLimits limits;
  // Threads running forward passes. More than one helps only with spare
  // cores. 0: no inference threads; batches run on the threads of
  // `run_inline` (the I/O loop), see below.
  int inference_threads = 1;
  // Required when inference_threads is 0, ignored otherwise: runs a function
  // soon on another thread's loop (HttpServer::Post). The first request
  // that finds no batch scheduled posts one; when it runs, it takes every
  // request queued by then (up to max_batch_size), so the requests that a
  // single poll of the sockets delivered go into one forward pass, and the
  // request never crosses to another thread and back. max_queue_delay_us
  // and early_dispatch do not apply: nothing waits for company. Whatever
  // the loop runs must not outlive the batcher: stop that loop (and drop
  // its queued functions) before destroying the batcher.
  std::function<void(std::function<void()>)> run_inline;
  // at::set_num_threads() inside each inference thread.
  int intra_op_threads = 1;
  std::vector<int64_t> input_shape = {1, 28, 28};  // per sample
  int64_t classes = 10;
  // Required; not owned.
  ModelManager* models = nullptr;
  // Optional; not owned. Gets queue time, batch size and forward time.
  MetricsRegistry* metrics = nullptr;
  // Optional; not owned. Gets every forward pass, by version and batch size.
  ModelStats* model_stats = nullptr;
  // Not owned; default Clock::Real().
  Clock* clock = nullptr;
  // An idle inference thread wakes this often to beat its heartbeat (see
  // Batcher::heartbeats). Keep it well below the watchdog's max age.
  int64_t heartbeat_period_ms = 200;
};

class Batcher {
 public:
  static Result<std::unique_ptr<Batcher>> Create(const BatcherOptions& options);
  virtual ~Batcher() = default;

  // Queues the task. Unavailable if the queue is full or the batcher stopped,
  // InvalidArgument for an empty task; `done` is not called then.
  virtual Status Submit(InferTask task) = 0;
  virtual void UpdateLimits(const BatchingLimits& limits) = 0;
  virtual BatchingLimits limits() const = 0;
  // Samples currently queued.
  virtual int64_t queued_samples() const = 0;
  // Requests answered since the batcher started (successfully or not); for
  // rate estimates such as the learner's inference_busy.
  virtual uint64_t completed_requests() const = 0;
  // Requests an idle inference thread currently waits for before it
  // dispatches early (>= 1); meaningful only with early_dispatch.
  virtual int64_t early_dispatch_target() const = 0;
  // Refuses new tasks, runs every queued one, joins the threads. Idempotent.
  virtual void Stop() = 0;
  // One liveness marker per inference thread (real clock), beaten while it
  // waits idle (every heartbeat_period_ms) and after every batch, so a
  // forward pass that never returns leaves it stale. For the systemd
  // watchdog; owned by the batcher, valid until it is destroyed.
  virtual std::vector<const Heartbeat*> heartbeats() const = 0;
};

}  // namespace distilld::daemon
