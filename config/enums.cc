// Names of the choice fields (config.h).
#include "common/enum_names.h"
#include "config/config.h"

namespace distilld::config {
namespace {

constexpr EnumNames<Precision, 2> kPrecision{{{Precision::kFloat, "float"}, {Precision::kInt8, "int8"}}};
constexpr EnumNames<ReplayPolicy, 2> kPolicy{
    {{ReplayPolicy::kClassBalanced, "class_balanced"}, {ReplayPolicy::kReservoir, "reservoir"}}};
constexpr EnumNames<TemperatureCurve, 3> kCurve{{{TemperatureCurve::kConstant, "constant"},
                                             {TemperatureCurve::kLinear, "linear"},
                                             {TemperatureCurve::kCosine, "cosine"}}};
constexpr EnumNames<Optimizer, 2> kOptimizer{{{Optimizer::kAdam, "adam"}, {Optimizer::kSgd, "sgd"}}};

}  // namespace

std::string_view PrecisionName(Precision v) { return EnumName(kPrecision, v); }
Result<Precision> ParsePrecision(std::string_view name) { return ParseEnum(kPrecision, name); }
std::string_view ReplayPolicyName(ReplayPolicy v) { return EnumName(kPolicy, v); }
Result<ReplayPolicy> ParseReplayPolicy(std::string_view name) { return ParseEnum(kPolicy, name); }
std::string_view TemperatureCurveName(TemperatureCurve v) { return EnumName(kCurve, v); }
Result<TemperatureCurve> ParseTemperatureCurve(std::string_view name) { return ParseEnum(kCurve, name); }
std::string_view OptimizerName(Optimizer v) { return EnumName(kOptimizer, v); }
Result<Optimizer> ParseOptimizer(std::string_view name) { return ParseEnum(kOptimizer, name); }

}  // namespace distilld::config
