// BlockingExecutor: a small thread pool for handler work that blocks on disk
// (a durable RocksDB write, an SQLite query, loading a model for rollback),
// so the I/O threads never wait on it.
//
// Tasks run in FIFO order on `threads` threads. Submit() refuses work beyond
// `max_queue` (the caller answers 503). Shutdown() runs what is queued and
// joins. Thread-safe; the executor owns its threads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace distilld::daemon {

class BlockingExecutor {
 public:
  BlockingExecutor(int threads, size_t max_queue);
  ~BlockingExecutor();
  BlockingExecutor(const BlockingExecutor&) = delete;
  BlockingExecutor& operator=(const BlockingExecutor&) = delete;

  // False (and `task` dropped) when the queue is full or shut down.
  bool Submit(std::function<void()> task);
  // Finishes queued tasks and joins the threads. Idempotent.
  void Shutdown();

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  size_t max_queue_;
  std::vector<std::thread> threads_;
};

}  // namespace distilld::daemon
