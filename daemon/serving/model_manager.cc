#include "daemon/serving/model_manager.h"

#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/thread_priority.h"
#include "learner/model/arch.h"
#include "learner/model/int8.h"
#include "learner/model/model_io.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"

namespace distilld::daemon {
namespace {

std::atomic<int> g_alive{0};

// Where versions go when their last user lets go of them, so that the
// destructor runs on a publishing thread rather than on an I/O thread that
// finished the last batch. Shared with the deleters, so a handle that
// outlives the manager still frees its model (then in place).
struct Graveyard {
  std::mutex mu;
  std::vector<const ServedModel*> dead;  // guarded by mu
  bool open = true;                      // guarded by mu

  void Bury(const ServedModel* m) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (open) {
        dead.push_back(m);
        return;
      }
    }
    delete m;
  }
  void Empty() {
    std::vector<const ServedModel*> now;
    {
      std::lock_guard<std::mutex> lock(mu);
      now.swap(dead);
    }
    for (const ServedModel* m : now) delete m;
  }
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu);
      open = false;
    }
    Empty();
  }
};

// Runs fn() on a fresh thread with `nice` added to that thread's nice value
// and one LibTorch intra-op thread, and returns its result.
template <class F>
auto RunNiced(int nice, F fn) -> decltype(fn()) {
  std::optional<decltype(fn())> out;
  std::thread t([&] {
    if (Status s = LowerCurrentThreadPriority(nice); !s.ok()) {
      LOG(kWarning) << "model prepare: " << s.ToString() << "; preparing at normal priority";
    }
    at::set_num_threads(1);
    out.emplace(fn());
  });
  t.join();
  return std::move(*out);
}

class ModelManagerImpl final : public ModelManager {
 public:
  explicit ModelManagerImpl(const ModelManagerOptions& options) : options_(options) {
    if (options_.clock == nullptr) options_.clock = Clock::Real();
    if (options_.metrics != nullptr) {
      active_gauge_ = options_.metrics
                          ->RegisterGauge("distilld_model_active_version", "Version number of the served student.")
                          ->Get();
      swaps_counter_ =
          options_.metrics->RegisterCounter("distilld_model_swaps_total", "Versions swapped in since start.")->Get();
      failures_ = options_.metrics
                      ->RegisterCounter("distilld_model_publish_failures_total",
                                        "Publishes that failed (load, checksum or warm-up); the old version stayed.")
                      ->Get();
      prepare_seconds_ = options_.metrics
                             ->RegisterHistogram("distilld_model_prepare_duration_seconds",
                                                 "Load, optimize and warm-up time of a published version.",
                                                 ExponentialBuckets(0.01, 2, 12))
                             ->Get();
    }
  }

  // Models still held elsewhere are freed by their last holder from now on.
  ~ModelManagerImpl() override {
    {
      std::lock_guard<std::mutex> lock(active_mu_);
      active_.reset();
    }
    graveyard_->Close();
  }

  Status Publish(const storage::VersionRecord& version) override {
    std::filesystem::path path = std::filesystem::path(options_.state_dir) / version.path;
    std::optional<std::string> sha;
    if (!version.sha256.empty()) sha = version.sha256;
    std::unique_lock<std::mutex> lock(publish_mu_);
    RETURN_IF_ERROR(WaitRetiredReleased());
    auto module = RunNiced(PrepareNice(), [&] { return learner::LoadModel(path.string(), sha); });
    if (!module.ok()) {
      if (failures_ != nullptr) failures_->Increment();
      return module.status().WithContext("publish v" + std::to_string(version.id));
    }
    return PublishLocked(version.id, std::move(module).value(), version.sha256);
  }

  Status PublishModule(int64_t version, torch::jit::Module module, std::string sha256) override {
    std::unique_lock<std::mutex> lock(publish_mu_);
    RETURN_IF_ERROR(WaitRetiredReleased());
    return PublishLocked(version, std::move(module), std::move(sha256));
  }

  std::shared_ptr<const ServedModel> Active() const override {
    std::lock_guard<std::mutex> lock(active_mu_);
    return active_;
  }

  std::shared_ptr<const ServedModel> Find(int64_t version) const override {
    std::lock_guard<std::mutex> lock(active_mu_);
    if (active_ && active_->version() == version) return active_;
    auto retired = retired_.lock();
    if (retired && retired->version() == version) return retired;
    return nullptr;
  }

  int64_t swaps() const override { return swaps_.load(); }

 private:
  // Before the first version is served there are no requests to leave CPU
  // to, and start-up readiness waits for this publish: normal priority then.
  int PrepareNice() const {
    std::lock_guard<std::mutex> lock(active_mu_);
    return active_ ? options_.prepare_nice : 0;
  }

  // Caller holds publish_mu_. Keeps the number of live versions at two.
  Status WaitRetiredReleased() {
    auto deadline = std::chrono::steady_clock::now() + options_.retire_wait;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(active_mu_);
        if (retired_.expired()) {
          lock.unlock();  // Active() callers must not wait for a destructor
          graveyard_->Empty();
          return Status::Ok();
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::Unavailable("the previously retired model version is still in use");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  Status PublishLocked(int64_t version, torch::jit::Module module, std::string sha256) {
    const int64_t start = options_.clock->MonotonicMicros();
    const int nice = PrepareNice();
    auto prepared = RunNiced(nice, [&] { return Prepare(std::move(module)); });
    if (!prepared.ok()) {
      if (failures_ != nullptr) failures_->Increment();
      return prepared.status().WithContext("publish v" + std::to_string(version));
    }
    std::shared_ptr<const ServedModel> model(
        new ServedModel(version, std::move(prepared).value(), std::move(sha256)),
        [graveyard = graveyard_](const ServedModel* m) { graveyard->Bury(m); });
    Status warm = RunNiced(nice, [&] { return WarmUp(*model); });
    if (!warm.ok()) {
      if (failures_ != nullptr) failures_->Increment();
      return warm.WithContext("publish v" + std::to_string(version));
    }
    const double prepare_s = static_cast<double>(options_.clock->MonotonicMicros() - start) / 1e6;
    std::shared_ptr<const ServedModel> old;
    {
      std::lock_guard<std::mutex> lock(active_mu_);
      old = std::move(active_);
      active_ = std::move(model);
      retired_ = old;
    }
    swaps_.fetch_add(1);
    if (active_gauge_ != nullptr) active_gauge_->Set(static_cast<double>(version));
    if (swaps_counter_ != nullptr) swaps_counter_->Increment();
    if (prepare_seconds_ != nullptr) prepare_seconds_->Observe(prepare_s);
    LOG(kInfo) << "serving model version " << version << (old ? " (was " + std::to_string(old->version()) + ")" : "")
               << ", prepared in " << static_cast<int64_t>(prepare_s * 1000) << " ms";
    old.reset();  // unless a batch still holds it, into the graveyard...
    graveyard_->Empty();  // ...and freed here, on the publishing thread
    return Status::Ok();
  }

  Result<torch::jit::Module> Prepare(torch::jit::Module module) {
    module.eval();
    if (options_.int8) {
      ASSIGN_OR_RETURN(learner::ArchSpec spec, learner::InferArchSpec(module, options_.input_shape));
      ASSIGN_OR_RETURN(module, learner::QuantizeDynamicInt8(module, spec));
      module.eval();
    }
    if (!options_.optimize) return module;
    try {
      // optimize_for_inference freezes an unfrozen module itself.
      return torch::jit::optimize_for_inference(module);
    } catch (const c10::Error& e) {
      // Some modules (e.g. with methods freeze cannot inline) are still
      // servable as they are; optimization is a speed-up, not a requirement.
      LOG(kWarning) << "freeze/optimize_for_inference failed, serving unoptimized: " << e.what_without_backtrace();
      return module;
    }
  }

  Status WarmUp(const ServedModel& model) {
    for (int64_t batch : options_.warmup_batch_sizes) {
      std::vector<int64_t> shape = {batch};
      shape.insert(shape.end(), options_.input_shape.begin(), options_.input_shape.end());
      at::Tensor input = torch::rand(shape);
      for (int i = 0; i < options_.warmup_iterations; ++i) {
        ASSIGN_OR_RETURN(at::Tensor out, model.Forward(input));
        if (out.dim() != 2 || out.size(0) != batch || out.size(1) != options_.classes) {
          return Status::InvalidArgument("model returns shape " + c10::str(out.sizes()) + " for batch " +
                                         std::to_string(batch) + ", expected [" + std::to_string(batch) + ", " +
                                         std::to_string(options_.classes) + "]");
        }
      }
    }
    return Status::Ok();
  }

  ModelManagerOptions options_;
  std::mutex publish_mu_;          // serialises Publish
  mutable std::mutex active_mu_;   // guards active_ and retired_
  std::shared_ptr<const ServedModel> active_;
  std::weak_ptr<const ServedModel> retired_;
  std::atomic<int64_t> swaps_{0};
  Gauge* active_gauge_ = nullptr;
  Counter* swaps_counter_ = nullptr;
  Counter* failures_ = nullptr;
  Histogram* prepare_seconds_ = nullptr;
  std::shared_ptr<Graveyard> graveyard_ = std::make_shared<Graveyard>();
};

}  // namespace

ServedModel::ServedModel(int64_t version, torch::jit::Module module, std::string sha256)
    : version_(version), module_(std::move(module)), sha256_(std::move(sha256)) {
  g_alive.fetch_add(1);
}

ServedModel::~ServedModel() { g_alive.fetch_sub(1); }

int ServedModel::alive() { return g_alive.load(); }

Result<at::Tensor> ServedModel::Forward(const at::Tensor& input) const {
  try {
    torch::NoGradGuard no_grad;
    torch::jit::IValue out = module_.forward({input});
    if (!out.isTensor()) return Status::Internal("model forward did not return a tensor");
    return out.toTensor().to(torch::kFloat).contiguous();
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("forward failed: ") + e.what_without_backtrace());
  }
}

Result<std::unique_ptr<ModelManager>> ModelManager::Create(const ModelManagerOptions& options) {
  if (options.state_dir.empty()) return Status::InvalidArgument("ModelManagerOptions.state_dir is required");
  if (options.classes <= 0) return Status::InvalidArgument("ModelManagerOptions.classes must be > 0");
  return std::unique_ptr<ModelManager>(new ModelManagerImpl(options));
}

}  // namespace distilld::daemon
