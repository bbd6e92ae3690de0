// Sample decoding from stored bytes: any input decodes or is refused with a
// Status; what decodes encodes, and its encoding is a fixed point (bytes,
// not Sample equality: teacher logits may be NaN).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "storage/sample.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distilld::storage;
  using distilld::Result;
  Result<Sample> s = DecodeSample(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!s.ok()) return 0;
  Result<std::string> once = EncodeSample(*s);
  if (!once.ok()) std::abort();  // decoded, so it must be encodable
  Result<Sample> back = DecodeSample(*once);
  if (!back.ok()) std::abort();
  Result<std::string> twice = EncodeSample(*back);
  if (!twice.ok() || *twice != *once) std::abort();
  return 0;
}
