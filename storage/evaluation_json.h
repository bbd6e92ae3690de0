// The JSON form of evaluation.h's types: how the registry stores them in its
// TEXT columns, and what the /v1 API shows. One shape, written in one place,
// so a stored round reads back the way the API showed it.
//
// Decoding is lenient: a missing field keeps its default, and a column that
// is not a JSON object (hand-edited, or written by a future version) decodes
// to "nothing recorded" rather than failing every listing it is part of.
//
// Thread-safety: free functions of their arguments.
#pragma once

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <optional>
#include <string>
#include <string_view>

#include "storage/evaluation.h"

namespace distilld::storage {

// The writer the Write* functions append to: the /v1 API writes these
// objects straight into its response, with no string in between.
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// {"basis":..,"candidate":{..},"active":{..},"active_version":..,
//  "label_space":[..],"active_label_space":[..],
//  "active_label_space_source":"recorded"|"inferred",
//  "holdout":{"size":..,"generation":..},"gate":{"promote":..,"basis":..,
//  "reason":..,"checks":[{"name":..,"class":..,"value":..,"threshold":..,
//  "pass":..,"significant":..,"detail":..}]}}, with each model as
// {"samples":..,"labelled":..,"accuracy":..,"balanced_accuracy":..,
//  "with_teacher":..,"agreement":..,"per_class":{"0":{"acc":..,"n":..}},
//  "old_space":{"classes":[..],"accuracy":..,"per_class":{..}}}.
std::string EncodeRoundEvaluation(const RoundEvaluation& evaluation);
void WriteRoundEvaluation(JsonWriter& w, const RoundEvaluation& evaluation);
// nullopt for "{}" and anything without a "candidate" object.
std::optional<RoundEvaluation> DecodeRoundEvaluation(std::string_view json);

// The round evaluation's object (when there is one) with "label_space" set
// from metrics.label_space; {"label_space":[..]} or {} without one.
std::string EncodeVersionMetrics(const VersionMetrics& metrics);
void WriteVersionMetrics(JsonWriter& w, const VersionMetrics& metrics);
VersionMetrics DecodeVersionMetrics(std::string_view json);

// {"steps":..,"recycled_units":..,"first":..,"last":..,"mean":..}
std::string EncodeRoundLoss(const RoundLoss& loss);
void WriteRoundLoss(JsonWriter& w, const RoundLoss& loss);
// nullopt for "{}" and anything without "steps".
std::optional<RoundLoss> DecodeRoundLoss(std::string_view json);

}  // namespace distilld::storage
