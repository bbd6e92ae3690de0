// POST /v1/samples: the tensor envelope (TensorRequest::Parse and the
// per-input conversions, shared with infer, JSON and binary) and the
// endpoint's own checks (DecodeSamplesBody: input name and shape, label
// shape and range, parameters.holdout). The first byte picks whether a
// header length (the next two bytes) is sent.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/api/samples_decode.h"
#include "daemon/serving/tensor_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distilld::daemon::internal;
  if (size < 3) return 0;
  std::optional<std::string> header;
  if (data[0] & 1) header = std::to_string(static_cast<unsigned>(data[1]) | (static_cast<unsigned>(data[2]) << 8));
  const std::string_view body(reinterpret_cast<const char*>(data + 3), size - 3);
  const std::optional<std::string_view> length = header ? std::optional<std::string_view>(*header) : std::nullopt;
  // The corpus's bodies are for a 1x2x2 input of 3 classes.
  distilld::daemon::ModelSignature model;
  model.input_shape = {1, 2, 2};
  model.classes = 3;
  auto decoded = distilld::daemon::api_internal::DecodeSamplesBody(model, body, length);
  if (decoded.ok()) {
    // What the store is handed: rows of the model's shape, labels in range,
    // and a held-out batch entirely labelled.
    if (decoded->samples.empty()) std::abort();
    for (const auto& s : decoded->samples) {
      if (s.shape != model.input_shape || s.data.size() != 4 * sizeof(float)) std::abort();
      if (s.label && (*s.label < 0 || *s.label >= model.classes)) std::abort();
      if (decoded->holdout && !s.label) std::abort();
    }
  } else if (decoded.status().code() != distilld::StatusCode::kInvalidArgument || decoded.status().message().empty()) {
    std::abort();  // a bad body is a 400 with a message, nothing else
  }
  auto r = TensorRequest::Parse(body, length);
  if (!r.ok()) return 0;
  for (const InputTensor& t : r->inputs()) {
    int64_t n = 1;
    bool overflow = false;
    for (int64_t d : t.view.shape) overflow = overflow || d < 0 || __builtin_mul_overflow(n, d, &n);
    if (overflow) continue;  // no conversion can match such a shape; nothing to compare
    std::vector<float> f;
    if (TensorRequest::AppendAsFloat(t, &f).ok() && f.size() != static_cast<size_t>(n)) std::abort();
    std::vector<int64_t> i;
    if (TensorRequest::AppendAsInt64(t, &i).ok() && i.size() != static_cast<size_t>(n)) std::abort();
  }
  return 0;
}
