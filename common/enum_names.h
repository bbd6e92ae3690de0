// Name/Parse for the enums that are stored or configured by name: one table
// of (value, name) pairs per enum, read both ways. Header-only, no state:
// thread-safe. The round-trip tests of each enum list every value, so a
// value missing from its table fails there.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace distilld {

template <typename E, size_t N>
using EnumNames = std::array<std::pair<E, std::string_view>, N>;

// The name of `value`, or "unknown" if the table lacks it.
template <typename E, size_t N>
std::string_view EnumName(const EnumNames<E, N>& names, E value) {
  for (const auto& [e, name] : names) {
    if (e == value) return name;
  }
  return "unknown";
}

// The value named `name`; InvalidArgument "unknown <what> "<name>"
// (expected one of: ...)" otherwise, or just "expected one of: ..." when
// `what` is empty (the config reader prefixes the key path itself).
template <typename E, size_t N>
Result<E> ParseEnum(const EnumNames<E, N>& names, std::string_view name, std::string_view what = {}) {
  std::string list;
  for (const auto& [e, n] : names) {
    if (n == name) return e;
    list += (list.empty() ? "" : ", ") + std::string(n);
  }
  if (what.empty()) return Status::InvalidArgument("expected one of: " + list);
  return Status::InvalidArgument("unknown " + std::string(what) + " \"" + std::string(name) +
                                 "\" (expected one of: " + list + ")");
}

}  // namespace distilld
