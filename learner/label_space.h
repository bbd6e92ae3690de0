// A version's label space: the classes its lineage was trained on. The gate
// judges old knowledge among these classes only (learner/gate.h). Stored in
// each version's metrics JSON as "label_space": [0, 1, ...].
// Free functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace distilld::learner {

// The "label_space" array of a version's metrics JSON; nullopt when the JSON
// has none (a version imported from a file, or from before label spaces were
// recorded) or it is malformed.
std::optional<std::set<int64_t>> LabelSpaceFromMetrics(std::string_view metrics_json);

// "[0,1,3]".
std::string LabelSpaceJson(const std::set<int64_t>& classes);

}  // namespace distilld::learner
