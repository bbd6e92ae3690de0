// Names of the choice fields (config.h).
#include <array>
#include <string>
#include <utility>

#include "config/config.h"

namespace distilld::config {
namespace {

template <typename E, size_t N>
using Table = std::array<std::pair<E, std::string_view>, N>;

constexpr Table<Precision, 2> kPrecision{{{Precision::kFloat, "float"}, {Precision::kInt8, "int8"}}};
constexpr Table<ReplayPolicy, 2> kPolicy{
    {{ReplayPolicy::kClassBalanced, "class_balanced"}, {ReplayPolicy::kReservoir, "reservoir"}}};
constexpr Table<TemperatureCurve, 3> kCurve{{{TemperatureCurve::kConstant, "constant"},
                                             {TemperatureCurve::kLinear, "linear"},
                                             {TemperatureCurve::kCosine, "cosine"}}};
constexpr Table<Optimizer, 2> kOptimizer{{{Optimizer::kAdam, "adam"}, {Optimizer::kSgd, "sgd"}}};

template <typename E, size_t N>
std::string_view NameIn(const Table<E, N>& table, E v) {
  for (const auto& [e, name] : table) {
    if (e == v) return name;
  }
  return "unknown";
}

template <typename E, size_t N>
Result<E> ParseIn(const Table<E, N>& table, std::string_view name) {
  std::string list;
  for (const auto& [e, n] : table) {
    if (n == name) return e;
    list += (list.empty() ? "" : ", ") + std::string(n);
  }
  return Status::InvalidArgument("expected one of: " + list);
}

}  // namespace

std::string_view PrecisionName(Precision v) { return NameIn(kPrecision, v); }
Result<Precision> ParsePrecision(std::string_view name) { return ParseIn(kPrecision, name); }
std::string_view ReplayPolicyName(ReplayPolicy v) { return NameIn(kPolicy, v); }
Result<ReplayPolicy> ParseReplayPolicy(std::string_view name) { return ParseIn(kPolicy, name); }
std::string_view TemperatureCurveName(TemperatureCurve v) { return NameIn(kCurve, v); }
Result<TemperatureCurve> ParseTemperatureCurve(std::string_view name) { return ParseIn(kCurve, name); }
std::string_view OptimizerName(Optimizer v) { return NameIn(kOptimizer, v); }
Result<Optimizer> ParseOptimizer(std::string_view name) { return ParseIn(kOptimizer, name); }

}  // namespace distilld::config
