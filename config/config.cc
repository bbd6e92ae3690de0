#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>

#include "config/reader.h"
#include "config/schema.h"

namespace distilld::config {
namespace {

using internal::Leaf;
using internal::Leaves;
using internal::PositionOf;
using internal::Reader;

// Walks one mapping of the YAML tree against the schema: a key is a leaf
// field, a section (some leaf's path continues below it) or an error that
// lists the valid keys at that level.
void ReadMapping(Reader& reader, const YAML::Node& node, const std::string& prefix, Config& config) {
  if (node.IsNull()) return;  // "section:" with nothing under it keeps defaults
  if (!node.IsMap()) {
    reader.Error(node, prefix.empty() ? "(root)" : prefix, "expected a mapping of keys to values");
    return;
  }
  const std::string below = prefix.empty() ? "" : prefix + ".";
  for (const auto& kv : node) {
    const std::string key = kv.first.Scalar();
    const std::string path = below + key;
    const Leaf* leaf = nullptr;
    bool section = false;
    for (const Leaf& l : Leaves()) {
      const std::string_view p(l.path);
      if (p == path) leaf = &l;
      if (p.size() > path.size() && p.starts_with(path) && p[path.size()] == '.') section = true;
    }
    if (leaf != nullptr) {
      reader.Remember(path, kv.second);
      leaf->parse(reader, kv.second, path, config);
    } else if (section) {
      reader.Remember(path, kv.second);
      ReadMapping(reader, kv.second, path, config);
    } else {
      std::vector<std::string> valid;
      for (const Leaf& l : Leaves()) {
        const std::string_view p(l.path);
        if (!p.starts_with(below)) continue;
        std::string name(p.substr(below.size(), p.find('.', below.size()) - below.size()));
        if (std::find(valid.begin(), valid.end(), name) == valid.end()) valid.push_back(name);
      }
      std::string list;
      for (const auto& v : valid) list += (list.empty() ? "" : ", ") + v;
      reader.Error(kv.first, path, "unknown key (valid keys here: " + list + ")");
    }
  }
}

// True if `listen` is "host:port" with a port in [0, 65535] ("[v6]:port" too).
bool ValidListen(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) return false;
  const std::string port = listen.substr(colon + 1);
  if (port.size() > 5) return false;
  for (char ch : port) {
    if (ch < '0' || ch > '9') return false;
  }
  return std::stoi(port) <= 65535;
}

}  // namespace

std::string ConfigError::ToString() const {
  std::string s = key_path.empty() ? message : key_path + ": " + message;
  if (line > 0) s += " at line " + std::to_string(line) + ", column " + std::to_string(column);
  return s;
}

std::vector<ConfigError> Validate(const Config& c) {
  std::vector<ConfigError> errors;
  auto add = [&](std::string path, std::string msg) { errors.push_back({std::move(path), std::move(msg)}); };
  if (c.server.listen.empty() && c.server.unix_socket.empty()) {
    add("server.listen", "at least one of server.listen and server.unix_socket must be set");
  }
  if (!c.server.listen.empty() && !ValidListen(c.server.listen)) {
    add("server.listen", "expected host:port with a port in [0, 65535], e.g. 127.0.0.1:8080");
  }
  if (c.model.name.empty()) add("model.name", "must not be empty");
  for (char ch : c.model.name) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')) {
      add("model.name", "may contain only letters, digits, '-', '_' and '.'");
      break;
    }
  }
  if (c.model.input_name.empty()) add("model.input_name", "must not be empty");
  if (!c.model.class_names.empty() &&
      static_cast<int64_t>(c.model.class_names.size()) != c.model.classes) {
    add("model.class_names", "expected " + std::to_string(c.model.classes) +
                                 " names (model.classes), got " +
                                 std::to_string(c.model.class_names.size()));
  }
  if (c.model.architecture.kind == "cnn") {
    if (c.model.input_shape.size() != 3) {
      add("model.input_shape", "a cnn needs a [channels, height, width] input shape");
    }
    if (c.model.architecture.channels.empty()) {
      add("model.architecture.channels", "a cnn needs at least one conv layer");
    }
  }
  if (c.learner.replay_shift_px > 0) {
    const auto& shape = c.model.input_shape;
    if (shape.size() < 2) {
      add("learner.replay_shift_px", "shifted views need an image input shape ([..., height, width]) in model.input_shape");
    } else if (c.learner.replay_shift_px >= std::min(shape[shape.size() - 2], shape.back())) {
      add("learner.replay_shift_px", "must be smaller than the image's height and width (model.input_shape)");
    }
  }
  if (c.storage.state_dir.empty()) add("storage.state_dir", "must not be empty");
  if (c.batching.queue_capacity < c.batching.max_batch_size) {
    add("batching.queue_capacity", "must be at least batching.max_batch_size");
  }
  return errors;
}

LoadResult ParseConfig(const std::string& yaml_text) {
  LoadResult result;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    result.errors.push_back({"", "invalid YAML: " + e.msg, e.mark.line + 1, e.mark.column + 1});
    return result;
  }
  if (!root.IsNull() && !root.IsMap()) {
    result.errors.push_back({"", "expected a mapping at the top level", PositionOf(root).first,
                             PositionOf(root).second});
    return result;
  }
  Reader reader(&result.errors);
  try {
    ReadMapping(reader, root, "", result.config);
  } catch (const YAML::Exception& e) {
    result.errors.push_back({"", "invalid YAML: " + e.msg, e.mark.line + 1, e.mark.column + 1});
    return result;
  }
  if (!result.errors.empty()) return result;
  for (ConfigError e : Validate(result.config)) {
    auto it = reader.positions().find(e.key_path);
    if (it != reader.positions().end()) {
      e.line = it->second.first;
      e.column = it->second.second;
    }
    result.errors.push_back(std::move(e));
  }
  return result;
}

LoadResult LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.errors.push_back({"", "cannot read config file " + path});
    return r;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str());
}

Result<Config> LoadConfig(const std::string& path) {
  LoadResult r = LoadConfigFile(path);
  if (r.ok()) return std::move(r.config);
  std::string msg;
  for (const auto& e : r.errors) msg += (msg.empty() ? "" : "; ") + e.ToString();
  return Status::InvalidArgument(path + ": " + msg);
}

}  // namespace distilld::config
