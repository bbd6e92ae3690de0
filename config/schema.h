// Internal to config/: the declarative schema, one entry per leaf field of
// Config. Parsing, diffing, reload and the field list all iterate it, so a
// field exists for all of them or for none.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"
#include "config/reader.h"

namespace distilld::config::internal {

struct Leaf {
  const char* path;     // "learner.epochs": the YAML key path and the C++ member path
  ReloadClass reload;   // when a changed value takes effect
  void (*parse)(Reader&, const YAML::Node&, const std::string& path, Config&);
  bool (*equal)(const Config&, const Config&);
  std::string (*show)(const Config&);
  void (*copy)(const Config& from, Config& to);
};

// Every leaf, in the order of config/distilld.example.yaml.
const std::vector<Leaf>& Leaves();

}  // namespace distilld::config::internal
