// The YAML config loader: any text parses to a validated config or to
// errors naming keys; it never throws or crashes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  distilld::config::LoadResult r = distilld::config::ParseConfig(text);
  if (r.ok() && !distilld::config::Validate(r.config).empty()) std::abort();  // accepted means valid
  return 0;
}
