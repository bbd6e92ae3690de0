// The KServe v2 infer decoder, JSON and binary: the first byte picks
// whether (and the next two bytes how long) an Inference-Header-Content-
// Length is sent; the rest is the body. A decoded request must be
// self-consistent, and encoding a response for it must not fail.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/serving/kserve_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distilld::daemon;
  using distilld::Result;
  if (size < 3) return 0;
  std::optional<std::string> header;
  if (data[0] & 1) header = std::to_string(static_cast<unsigned>(data[1]) | (static_cast<unsigned>(data[2]) << 8));
  if (data[0] & 2) header = std::string(reinterpret_cast<const char*>(data + 1), 2);  // arbitrary text
  const std::string_view body(reinterpret_cast<const char*>(data + 3), size - 3);
  ModelSignature model;
  model.input_shape = {2, 2};
  model.classes = 3;
  Result<InferRequest> r = DecodeInferRequest(body, header ? std::optional<std::string_view>(*header) : std::nullopt, model);
  if (!r.ok()) return 0;
  if (r->batch < 1 || r->data.size() != static_cast<size_t>(r->batch * model.SampleElements()) || r->outputs.empty()) {
    std::abort();
  }
  std::vector<float> logits(static_cast<size_t>(r->batch * model.classes), 0.5f);
  EncodedResponse e = EncodeInferResponse(model, 1, *r, logits.data());
  if (e.body.empty()) std::abort();
  return 0;
}
