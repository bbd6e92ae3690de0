// Small helpers for writing JSON by hand on the request path, where building a
// DOM would cost more than the model's forward pass. Thread-safe (pure).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace distilld::daemon {

// Appends `s` as a quoted JSON string, escaping quotes, backslashes and
// control characters (other bytes pass through; input is expected UTF-8).
void AppendJsonString(std::string* out, std::string_view s);
// Shortest round-trip decimal (std::to_chars); non-finite values become null,
// which JSON cannot otherwise express.
void AppendJsonFloat(std::string* out, float v);
void AppendJsonInt(std::string* out, int64_t v);

}  // namespace distilld::daemon
