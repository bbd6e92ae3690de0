// KServe v2 (Open Inference Protocol) REST codec: JSON bodies and the binary
// tensor data extension, as Triton defines it.
//
// Binary extension: the header `Inference-Header-Content-Length: H` says the
// first H bytes of the body are the JSON header; raw little-endian tensor
// bytes follow, one block per input that carries
// "parameters": {"binary_data_size": n}, in input order. Outputs requested
// with "parameters": {"binary_data": true} (or the request-level
// "binary_data_output": true) are returned the same way.
//
// Every validation failure is InvalidArgument whose message names the field,
// e.g. "inputs[0].shape: expected [N,1,28,28], got [1,784]". Free functions
// and value types: thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "storage/sample.h"

namespace distilld::daemon {

// What the served model accepts and returns (from config.model).
struct ModelSignature {
  std::string name = "fashion";
  std::string input_name = "input";
  std::vector<int64_t> input_shape = {1, 28, 28};  // per sample, without batch
  int64_t classes = 10;
  int64_t SampleElements() const;
};

// One tensor of a request, as sent (before conversion).
struct TensorView {
  std::string name;
  storage::DType dtype = storage::DType::kFloat32;
  std::vector<int64_t> shape;
  int64_t NumElements() const;
};

enum class OutputKind { kLogits, kProbabilities, kLabel };
std::string_view OutputName(OutputKind kind);

struct RequestedOutput {
  OutputKind kind = OutputKind::kLogits;
  bool binary = false;
};

// A decoded, validated inference request.
struct InferRequest {
  std::optional<std::string> id;  // echoed in the response
  int64_t batch = 0;              // samples
  storage::DType dtype = storage::DType::kFloat32;  // as sent
  std::vector<float> data;        // batch * SampleElements() values, row-major
  std::vector<RequestedOutput> outputs;  // never empty
};

// Parses and validates an infer request body for `model`.
// `header_length` is the Inference-Header-Content-Length header value, if any.
Result<InferRequest> DecodeInferRequest(std::string_view body, std::optional<std::string_view> header_length,
                                        const ModelSignature& model);

struct EncodedResponse {
  std::string body;
  // Set when any output is binary: the JSON header's length, to be sent as
  // Inference-Header-Content-Length (Content-Type application/octet-stream).
  std::optional<size_t> header_length;
};

// Builds the response for `request` from its logits [batch, classes].
EncodedResponse EncodeInferResponse(const ModelSignature& model, int64_t version, const InferRequest& request,
                                    const float* logits);

// IEEE 754 half to float (used for FP16 inputs).
float HalfToFloat(uint16_t h);

}  // namespace distilld::daemon
