// Internal to config/: the YAML value parsers behind the schema.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace distilld::config::internal {

using Position = std::pair<int, int>;  // 1-based line, column

inline Position PositionOf(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return {0, 0};
  return {m.line + 1, m.column + 1};
}

// The typed value parsers the schema (config/schema.cc) binds to Config
// fields, and the errors and key positions they collect. Not thread-safe:
// one Reader per parse.
class Reader {
 public:
  using Handler = std::function<void(const YAML::Node&, const std::string&)>;

  explicit Reader(std::vector<ConfigError>* errors) : errors_(errors) {}

  const std::map<std::string, Position>& positions() const { return marks_; }

  void Error(const YAML::Node& node, const std::string& path, const std::string& message) {
    Position m = PositionOf(node);
    errors_->push_back({path, message, m.first, m.second});
  }

  // Records where `path`'s value sits, for errors found after parsing.
  void Remember(const std::string& path, const YAML::Node& value) { marks_[path] = PositionOf(value); }

  Handler Int(int64_t* out, int64_t min, int64_t max) {
    return [this, out, min, max](const YAML::Node& n, const std::string& path) {
      int64_t v;
      if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < min || v > max) {
        Error(n, path, "expected an integer in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "]");
        return;
      }
      *out = v;
    };
  }
  Handler Int32(int* out, int min, int max) {
    return [this, out, min, max](const YAML::Node& n, const std::string& path) {
      int64_t v = 0;
      Int(&v, min, max)(n, path);
      if (v >= min && v <= max) *out = static_cast<int>(v);
    };
  }
  Handler UInt(uint64_t* out, uint64_t min, uint64_t max) {
    return [this, out, min, max](const YAML::Node& n, const std::string& path) {
      int64_t v;
      if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < 0 ||
          static_cast<uint64_t>(v) < min || static_cast<uint64_t>(v) > max) {
        Error(n, path, "expected an integer in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "]");
        return;
      }
      *out = static_cast<uint64_t>(v);
    };
  }
  // A number in a range; `min_exclusive` makes the lower bound strict.
  Handler Number(double* out, double min, double max, bool min_exclusive, const std::string& what) {
    return [=, this](const YAML::Node& n, const std::string& path) {
      double v;
      if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v) ||
          (min_exclusive ? v <= min : v < min) || v > max) {
        Error(n, path, "expected a number " + what);
        return;
      }
      *out = v;
    };
  }
  Handler Bool(bool* out) {
    return [this, out](const YAML::Node& n, const std::string& path) {
      bool v;
      if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
        Error(n, path, "expected true or false");
        return;
      }
      *out = v;
    };
  }
  Handler String(std::string* out) {
    return [this, out](const YAML::Node& n, const std::string& path) {
      if (n.IsNull()) {
        out->clear();
        return;
      }
      if (!n.IsScalar()) {
        Error(n, path, "expected a string");
        return;
      }
      *out = n.Scalar();
    };
  }
  Handler Choice(std::string* out, std::vector<std::string> choices) {
    return [this, out, choices](const YAML::Node& n, const std::string& path) {
      if (n.IsScalar()) {
        for (const auto& c : choices) {
          if (n.Scalar() == c) {
            *out = c;
            return;
          }
        }
      }
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
      Error(n, path, "expected one of: " + list);
    };
  }
  // A choice field: `parse` maps the YAML name to the enum (config.h).
  template <typename E>
  Handler Enum(E* out, Result<E> (*parse)(std::string_view)) {
    return [this, out, parse](const YAML::Node& n, const std::string& path) {
      Result<E> v = parse(n.IsScalar() ? std::string_view(n.Scalar()) : std::string_view());
      if (v.ok()) {
        *out = *v;
      } else {
        Error(n, path, v.status().message());
      }
    };
  }
  Handler IntList(std::vector<int64_t>* out, int64_t min, int64_t max, bool allow_empty) {
    return [=, this](const YAML::Node& n, const std::string& path) {
      std::vector<int64_t> values;
      bool ok = n.IsSequence() && (allow_empty || n.size() > 0);
      if (ok) {
        for (const auto& item : n) {
          int64_t v;
          if (!item.IsScalar() || !YAML::convert<int64_t>::decode(item, v) || v < min || v > max) {
            ok = false;
            break;
          }
          values.push_back(v);
        }
      }
      if (!ok) {
        Error(n, path, std::string("expected a ") + (allow_empty ? "" : "non-empty ") +
                           "list of integers in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "]");
        return;
      }
      *out = std::move(values);
    };
  }
  Handler StringList(std::vector<std::string>* out) {
    return [this, out](const YAML::Node& n, const std::string& path) {
      std::vector<std::string> values;
      if (!n.IsSequence()) {
        Error(n, path, "expected a list of strings");
        return;
      }
      for (const auto& item : n) {
        if (!item.IsScalar()) {
          Error(item, path, "expected a list of strings");
          return;
        }
        values.push_back(item.Scalar());
      }
      *out = std::move(values);
    };
  }
  // A file mode written as an octal string ("0660") or an integer read as octal.
  Handler Mode(uint32_t* out) {
    return [this, out](const YAML::Node& n, const std::string& path) {
      const std::string s = n.IsScalar() ? n.Scalar() : "";
      bool ok = !s.empty() && s.size() <= 4;
      uint32_t v = 0;
      for (char c : s) {
        if (c < '0' || c > '7') ok = false;
        else v = v * 8 + static_cast<uint32_t>(c - '0');
      }
      if (!ok) {
        Error(n, path, "expected an octal file mode such as \"0660\"");
        return;
      }
      *out = v;
    };
  }

 private:
  std::vector<ConfigError>* errors_;
  std::map<std::string, Position> marks_;
};

}  // namespace distilld::config::internal
