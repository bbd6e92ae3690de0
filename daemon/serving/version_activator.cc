#include "daemon/serving/version_activator.h"
// Last: replaces glog's LOG macro that LibTorch headers define.
#include "common/log.h"


namespace distilld::daemon {

VersionActivator::VersionActivator(ModelManager* models, storage::Registry* registry, Observer observer)
    : models_(models), registry_(registry), observer_(std::move(observer)) {}

Status VersionActivator::PublishLocked(const storage::VersionRecord& version) {
  RETURN_IF_ERROR(models_->Publish(version));
  Status st = registry_->Activate(version.id, /*allow_rejected=*/false);
  if (!st.ok()) {
    // Serving already switched; the registry is the record of truth after a
    // restart, so say loudly that they differ until the next activation.
    LOG(kError) << "serving version " << version.id << " but the registry refused to activate it: "
                << st.ToString();
    return st;
  }
  storage::VersionRecord active = version;
  active.status = storage::VersionStatus::kActive;
  if (observer_) observer_(active);
  return Status::Ok();
}

Status VersionActivator::Publish(const storage::VersionRecord& version) {
  std::lock_guard<std::mutex> lock(mu_);
  return PublishLocked(version);
}

Result<int64_t> VersionActivator::Activate(int64_t version_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Result<storage::VersionRecord> found = registry_->GetVersion(version_id);
  if (!found.ok()) {
    if (found.status().code() == StatusCode::kNotFound) {
      return Status::NotFound("no stored version " + std::to_string(version_id));
    }
    return found.status();
  }
  storage::VersionRecord record = std::move(found).value();
  if (record.status == storage::VersionStatus::kRejected) {
    return Status::FailedPrecondition("version " + std::to_string(version_id) +
                                      " was rejected (" + record.note + ") and cannot be activated");
  }
  if (record.file_removed_us) {
    return Status::FailedPrecondition("version " + std::to_string(version_id) +
                                      "'s file was removed by the retention policy (learner.keep_versions, "
                                      "learner.keep_served_versions) and cannot be activated");
  }
  ASSIGN_OR_RETURN(std::optional<storage::VersionRecord> active, registry_->ActiveVersion());
  const int64_t previous = active.has_value() ? active->id : 0;
  if (previous == version_id) return previous;
  RETURN_IF_ERROR(PublishLocked(record));
  const bool back = version_id < previous;
  (void)registry_->LogEvent(back ? storage::EventKind::kRollback : storage::EventKind::kActivate,
                            std::string(back ? "rolled back" : "rolled forward") + " from version " +
                                std::to_string(previous) + " to version " + std::to_string(version_id),
                            version_id);
  LOG(kInfo) << "activated version " << version_id << " (was " << previous << ")";
  return previous;
}

}  // namespace distilld::daemon
