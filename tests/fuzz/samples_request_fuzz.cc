// The tensor envelope of POST /v1/samples (and infer): TensorRequest::Parse
// and the per-input conversions, JSON and binary. The first byte picks
// whether a header length (the next two bytes) is sent.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/serving/tensor_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distilld::daemon::internal;
  if (size < 3) return 0;
  std::optional<std::string> header;
  if (data[0] & 1) header = std::to_string(static_cast<unsigned>(data[1]) | (static_cast<unsigned>(data[2]) << 8));
  const std::string_view body(reinterpret_cast<const char*>(data + 3), size - 3);
  auto r = TensorRequest::Parse(body, header ? std::optional<std::string_view>(*header) : std::nullopt);
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
