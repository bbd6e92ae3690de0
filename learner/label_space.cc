// See label_space.h.
#include "learner/label_space.h"

#include <rapidjson/document.h>

namespace distilld::learner {

std::optional<std::set<int64_t>> LabelSpaceFromMetrics(std::string_view metrics_json) {
  rapidjson::Document d;
  d.Parse(metrics_json.data(), metrics_json.size());
  if (d.HasParseError() || !d.IsObject()) return std::nullopt;
  auto it = d.FindMember("label_space");
  if (it == d.MemberEnd() || !it->value.IsArray()) return std::nullopt;
  std::set<int64_t> out;
  for (const auto& v : it->value.GetArray()) {
    if (!v.IsInt64() || v.GetInt64() < 0) return std::nullopt;
    out.insert(v.GetInt64());
  }
  return out;
}

std::string LabelSpaceJson(const std::set<int64_t>& classes) {
  std::string out = "[";
  for (int64_t c : classes) {
    if (out.size() > 1) out += ",";
    out += std::to_string(c);
  }
  return out + "]";
}

}  // namespace distilld::learner
