#include "learner/round_settings.h"

#include <string>

namespace distilld::learner {

Status ValidateLearnerSettings(const config::LearnerConfig& l, const config::ReplayConfig& replay) {
  auto bad = [](const std::string& field, const std::string& what) {
    return Status::InvalidArgument("learner." + field + " " + what);
  };
  if (l.epochs <= 0) return bad("epochs", "must be > 0");
  if (l.batch_size <= 0) return bad("batch_size", "must be > 0");
  if (l.max_steps < 0) return bad("max_steps", "must be >= 0");
  if (!(l.learning_rate > 0)) return bad("learning_rate", "must be > 0");
  if (!(l.alpha >= 0 && l.alpha <= 1)) return bad("alpha", "must be in [0, 1]");
  if (!(l.temperature > 0)) return bad("temperature", "must be > 0");
  if (Status s = ValidateSchedule(TemperatureScheduleFrom(l)); !s.ok()) {
    return bad("temperature_schedule", s.message());
  }
  if (!(l.feature.weight >= 0)) return bad("feature.weight", "must be >= 0");
  if (l.balanced_finetune_epochs < 0) return bad("balanced_finetune_epochs", "must be >= 0");
  if (!(l.balanced_finetune_lr_scale > 0)) return bad("balanced_finetune_lr_scale", "must be > 0");
  if (l.replay_shift_px < 0) return bad("replay_shift_px", "must be >= 0");
  if (!(l.weight_average_decay >= 0 && l.weight_average_decay < 1)) {
    return bad("weight_average_decay", "must be in [0, 1)");
  }
  if (l.warmup_steps < 0) return bad("warmup_steps", "must be >= 0");
  if (!(l.dormant_threshold >= 0)) return bad("dormant_threshold", "must be >= 0");
  if (l.max_yield_s < 0) return bad("max_yield_s", "must be >= 0");
  if (l.keep_versions < 1) return bad("keep_versions", "must be >= 1");
  if (l.keep_served_versions < -1) return bad("keep_served_versions", "must be >= -1 (-1 keeps all)");
  if (std::string g = ValidateGateOptions(GateOptionsFrom(l)); !g.empty()) {
    return Status::InvalidArgument("learner gate: " + g);
  }
  if (!(replay.replay_ratio >= 0)) return Status::InvalidArgument("replay.replay_ratio must be >= 0");
  return Status::Ok();
}

GateOptions GateOptionsFrom(const config::LearnerConfig& l) {
  GateOptions g;
  g.max_accuracy_drop = l.max_accuracy_drop;
  g.max_class_drop = l.max_class_drop;
  g.min_class_retention = l.min_class_retention;
  g.min_new_class_accuracy = l.min_new_class_accuracy;
  g.min_class_samples = l.min_class_samples;
  g.regression_z = l.regression_z;
  return g;
}

TemperatureScheduleOptions TemperatureScheduleFrom(const config::LearnerConfig& l) {
  TemperatureScheduleOptions s;
  s.start = l.temperature_schedule.start;
  s.end = l.temperature_schedule.end;
  s.curve = l.temperature_schedule.curve;
  if (s.curve == config::TemperatureCurve::kConstant) s.start = s.end = l.temperature;
  return s;
}

ImageAugmentOptions ReplayAugment(const config::LearnerConfig& l) {
  ImageAugmentOptions a;
  a.max_shift = l.replay_shift_px;
  return a;
}

RecycleOptions RecycleOptionsFrom(const config::LearnerConfig& l) {
  RecycleOptions r;
  r.threshold = l.dormant_threshold;
  return r;
}

RetentionPolicy RetentionPolicyFrom(const config::LearnerConfig& learner) {
  RetentionPolicy p;
  p.keep_last = learner.keep_versions;
  p.keep_served = learner.keep_served_versions;
  return p;
}

}  // namespace distilld::learner
