// Client-side KServe v2 encoding for the demo driver and tools: builds
// binary-extension request bodies and reads the fields of infer responses.
// Free functions, no state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "daemon/demo/http_client.h"

namespace distilld::daemon {

struct EncodedRequest {
  std::string body;
  HttpClient::Headers headers;  // Content-Type and Inference-Header-Content-Length
};

// An infer request for `count` FP32 samples of `sample_shape`, with the data
// as binary (Triton's binary tensor data extension), asking for `label` only.
EncodedRequest EncodeInferRequest(const std::string& input_name, const float* data, int64_t count,
                                  const std::vector<int64_t>& sample_shape, const std::string& id);

// A POST /v1/samples body: FP32 `input` tensor and INT64 `label` tensor
// (-1 = unlabelled), both binary.
EncodedRequest EncodeSamplesRequest(const float* data, const int64_t* labels, int64_t count,
                                    const std::vector<int64_t>& sample_shape);

struct InferAnswer {
  std::string model_version;
  std::vector<int64_t> labels;
};

// Parses a JSON infer response that carries a `label` output (as JSON data).
Result<InferAnswer> ParseInferAnswer(const std::string& body);

}  // namespace distilld::daemon
