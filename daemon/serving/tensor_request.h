// Private to daemon/: the envelope shared by every tensor-carrying request
// (KServe infer and POST /v1/samples): the JSON header parsed with
// RapidJSON, binary blocks split off, and per-input conversion to float or
// int64 with validation. A TensorRequest borrows the body: it must not
// outlive it. Thread-compatible.
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "daemon/http/types.h"
#include "daemon/serving/kserve_codec.h"

namespace distilld::daemon::internal {

struct InputTensor {
  TensorView view;
  std::string field;                         // "inputs[0]", for messages
  std::optional<std::string_view> binary;    // raw bytes when sent binary
  const rapidjson::Value* data = nullptr;    // JSON "data" otherwise
};

struct OutputRequest {
  std::string name;
  std::string field;  // "outputs[1]"
  bool binary = false;
};

class TensorRequest {
 public:
  // Parses the JSON header (all of `body`, or its first `header_length`
  // bytes) and splits the binary blocks after it.
  static Result<TensorRequest> Parse(std::string_view body, std::optional<std::string_view> header_length);

  const std::optional<std::string>& id() const { return id_; }
  const std::vector<InputTensor>& inputs() const { return inputs_; }
  const std::vector<OutputRequest>& outputs() const { return outputs_; }
  bool binary_data_output() const { return binary_data_output_; }
  // The request-level "parameters" object, or null. Valid while this
  // TensorRequest lives.
  const rapidjson::Value* parameters() const { return parameters_; }

  // Appends the input's values converted to float to *out. Checks element
  // count, integer ranges for UINT8/INT8 and finiteness.
  static Status AppendAsFloat(const InputTensor& input, std::vector<float>* out);
  // For integer tensors such as labels (INT64/INT32/UINT8/INT8).
  static Status AppendAsInt64(const InputTensor& input, std::vector<int64_t>* out);

 private:
  std::shared_ptr<rapidjson::Document> doc_;  // shared so the type is movable cheaply
  std::optional<std::string> id_;
  std::vector<InputTensor> inputs_;
  std::vector<OutputRequest> outputs_;
  bool binary_data_output_ = false;
  const rapidjson::Value* parameters_ = nullptr;  // points into *doc_
};

std::string ShapeString(const std::vector<int64_t>& shape);

// The binary tensor extension's header: how many leading body bytes are the
// JSON header (absent: all of them).
inline constexpr char kHeaderLengthField[] = "Inference-Header-Content-Length";
// Its value in `req`, if sent; a view into `req`.
std::optional<std::string_view> HeaderLengthOf(const HttpRequest& req);

}  // namespace distilld::daemon::internal
