// The learner's typed settings, read from its configuration
// (config::LearnerConfig): one place that turns config fields into the
// options of the gate, the KD temperature schedule, replay views and
// recycling. Pure functions; thread-compatible.
#pragma once

#include "common/status.h"
#include "config/config.h"
#include "learner/augment.h"
#include "learner/gate.h"
#include "learner/kd_loss.h"
#include "learner/recycle.h"
#include "learner/version_retention.h"

namespace distilld::learner {

// InvalidArgument naming the first bad field by its config key (for callers
// that build a LearnerConfig in code; LoadConfig already checks ranges).
Status ValidateLearnerSettings(const config::LearnerConfig& learner, const config::ReplayConfig& replay);

GateOptions GateOptionsFrom(const config::LearnerConfig& learner);
// learner.temperature_schedule, or the constant learner.temperature when
// the schedule's curve is "constant".
TemperatureScheduleOptions TemperatureScheduleFrom(const config::LearnerConfig& learner);
ImageAugmentOptions ReplayAugment(const config::LearnerConfig& learner);
RecycleOptions RecycleOptionsFrom(const config::LearnerConfig& learner);
RetentionPolicy RetentionPolicyFrom(const config::LearnerConfig& learner);

}  // namespace distilld::learner
