// VersionActivator: the one place a version becomes the served one.
//
// Both the learner's promotions and the operator's rollbacks go through it,
// under one mutex, so the registry's active version and the served version
// cannot be interleaved into disagreement: Publish (load, warm, swap) then
// Registry::Activate, then an event. Implements learner::VersionPublisher and
// reports ActivatesInRegistry() so the learner does not activate again.
//
// Thread-safety: all methods may be called from any thread; they block for a
// model load, so never call them on an I/O thread. Owns nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "common/status.h"
#include "daemon/serving/model_manager.h"
#include "learner/publisher.h"
#include "storage/registry.h"

namespace distilld::daemon {

class VersionActivator : public learner::VersionPublisher {
 public:
  // Called after each successful activation with the record (for metrics).
  using Observer = std::function<void(const storage::VersionRecord&)>;
  VersionActivator(ModelManager* models, storage::Registry* registry, Observer observer = nullptr);

  // The learner's promotion: serve, then activate in the registry.
  Status Publish(const storage::VersionRecord& version) override;
  bool ActivatesInRegistry() const override { return true; }

  // An operator's activation of a stored version (rollback or forward).
  // NotFound for an unknown version; FailedPrecondition for a rejected one.
  // Returns the version that was active before.
  Result<int64_t> Activate(int64_t version_id);

 private:
  Status PublishLocked(const storage::VersionRecord& version);
  std::mutex mu_;  // serialises every activation
  ModelManager* models_;
  storage::Registry* registry_;
  Observer observer_;
};

}  // namespace distilld::daemon
