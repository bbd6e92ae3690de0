// The narrow interface through which the learner hands a version to serving.
//
// The learner does not know about HTTP or the model manager: it calls
// Publish() with a version it has saved and registered, and serving loads,
// warms and swaps it in. Tests implement it with a plain recorder.
#pragma once

#include "common/status.h"
#include "storage/registry.h"

namespace distilld::learner {

class VersionPublisher {
 public:
  virtual ~VersionPublisher() = default;
  // Loads and warms `version` (its file is `version.path`, relative to the
  // state dir) and makes it the served version. Blocks until it is live or
  // failed; on failure the previously served version stays. Must be callable
  // from any thread. Unless ActivatesInRegistry(), it does not touch the
  // registry: the caller activates the version there after Publish succeeds.
  virtual Status Publish(const storage::VersionRecord& version) = 0;
  // True if Publish() also makes the version active in the registry (and so
  // serialises it with rollbacks); the learner then must not activate it
  // itself, or a rollback between the two steps would be undone.
  virtual bool ActivatesInRegistry() const { return false; }
};

}  // namespace distilld::learner
