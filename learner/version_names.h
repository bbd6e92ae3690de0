// How a version's file is named: models/v000012.pt under the state dir.
// Header-only and free of LibTorch, so the retention code (and tools that
// check a state dir) can name and recognise version files.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace distilld::learner {

// "v000012": how logs, STATUS= and file names spell a version.
inline std::string VersionName(int64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "v%06lld", static_cast<long long>(id));
  return buf;
}

// "models/v000012.pt", relative to the state dir.
inline std::string VersionRelativePath(int64_t id) { return "models/" + VersionName(id) + ".pt"; }

// The id in a file name VersionName(id) + ".pt" produced ("v000012.pt" -> 12),
// or nullopt for any other name.
inline std::optional<int64_t> ParseVersionFileName(std::string_view name) {
  if (name.size() < 5 || name.front() != 'v' || name.substr(name.size() - 3) != ".pt") return std::nullopt;
  std::string_view digits = name.substr(1, name.size() - 4);
  if (digits.size() < 6 || digits.size() > 18) return std::nullopt;
  int64_t id = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    id = id * 10 + (c - '0');
  }
  if (id <= 0 || VersionName(id) != std::string("v") + std::string(digits)) return std::nullopt;
  return id;
}

}  // namespace distilld::learner
