// The body of POST /v1/samples decoded into samples, with every check a
// client can fail: the input's name and shape, values that convert to
// float, the label tensor's shape and range, and parameters.holdout (a
// boolean; held-out samples must all be labelled). The part of the endpoint
// that needs no store and no model, so the fuzz target runs it alone.
//
// Thread-safety: a free function of its arguments.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "daemon/serving/kserve_codec.h"
#include "storage/sample.h"

namespace distilld::daemon::api_internal {

struct DecodedSamples {
  // One per row of the input tensor, source kIngest, labelled where the
  // label tensor holds a class (>= 0).
  std::vector<storage::Sample> samples;
  // parameters.holdout: the samples go straight into the held-out set (to
  // seed it for classes the initial student already knows).
  bool holdout = false;
};

// InvalidArgument with the message of the 400 (naming the field, and the
// first bad sample where there is one).
Result<DecodedSamples> DecodeSamplesBody(const ModelSignature& model, std::string_view body,
                                         std::optional<std::string_view> header_length);

}  // namespace distilld::daemon::api_internal
