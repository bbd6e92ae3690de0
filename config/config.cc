#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <utility>

namespace distilld::config {
namespace {

using Mark = std::pair<int, int>;  // 1-based line, column

Mark MarkOf(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return {0, 0};
  return {m.line + 1, m.column + 1};
}

// Walks the YAML tree against the schema below, filling a Config and
// collecting every error with its key path and position.
class Reader {
 public:
  using Handler = std::function<void(const YAML::Node&, const std::string&)>;
  using Fields = std::vector<std::pair<std::string, Handler>>;

  explicit Reader(std::vector<ConfigError>* errors) : errors_(errors) {}

  const std::map<std::string, Mark>& marks() const { return marks_; }

  void Error(const YAML::Node& node, const std::string& path, const std::string& message) {
    Mark m = MarkOf(node);
    errors_->push_back({path, message, m.first, m.second});
  }

  void Map(const YAML::Node& node, const std::string& path, const Fields& fields) {
    if (node.IsNull()) return;  // "section:" with nothing under it keeps defaults
    if (!node.IsMap()) {
      Error(node, path.empty() ? "(root)" : path, "expected a mapping of keys to values");
      return;
    }
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      const std::string child = path.empty() ? key : path + "." + key;
      const Handler* handler = nullptr;
      for (const auto& [name, h] : fields) {
        if (name == key) handler = &h;
      }
      if (handler == nullptr) {
        std::string valid;
        for (const auto& f : fields) valid += (valid.empty() ? "" : ", ") + f.first;
        Error(kv.first, child, "unknown key (valid keys here: " + valid + ")");
        continue;
      }
      marks_[child] = MarkOf(kv.second);
      (*handler)(kv.second, child);
    }
  }

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
  Handler Section(Fields fields) {
    return [this, fields = std::move(fields)](const YAML::Node& n, const std::string& path) {
      Map(n, path, fields);
    };
  }

 private:
  std::vector<ConfigError>* errors_;
  std::map<std::string, Mark> marks_;
};

constexpr int64_t kMaxI = std::numeric_limits<int32_t>::max();

Reader::Fields Schema(Reader& r, Config& c) {
  ServerConfig& s = c.server;
  ModelConfig& m = c.model;
  BatchingConfig& b = c.batching;
  StorageConfig& st = c.storage;
  ReplayConfig& rp = c.replay;
  LearnerConfig& l = c.learner;
  return {
      {"server", r.Section({
                     {"listen", r.String(&s.listen)},
                     {"unix_socket", r.String(&s.unix_socket)},
                     {"unix_socket_mode", r.Mode(&s.unix_socket_mode)},
                     {"io_threads", r.Int32(&s.io_threads, 1, 64)},
                     {"loop_per_thread", r.Bool(&s.loop_per_thread)},
                     {"max_body_bytes", r.UInt(&s.max_body_bytes, 1024, 1ull << 32)},
                     {"max_header_bytes", r.UInt(&s.max_header_bytes, 512, 1u << 20)},
                     {"read_timeout_ms", r.Int(&s.read_timeout_ms, 1, 3'600'000)},
                     {"idle_timeout_ms", r.Int(&s.idle_timeout_ms, 1, 86'400'000)},
                     {"max_connections", r.Int32(&s.max_connections, 1, 1'000'000)},
                     {"drain_timeout_ms", r.Int(&s.drain_timeout_ms, 0, 3'600'000)},
                     {"auth_token_file", r.String(&s.auth_token_file)},
                     {"auth_inference", r.Bool(&s.auth_inference)},
                 })},
      {"model", r.Section({
                    {"name", r.String(&m.name)},
                    {"input_name", r.String(&m.input_name)},
                    {"input_shape", r.IntList(&m.input_shape, 1, 1 << 16, false)},
                    {"classes", r.Int(&m.classes, 2, 1 << 16)},
                    {"class_names", r.StringList(&m.class_names)},
                    {"teacher", r.String(&m.teacher)},
                    {"student", r.String(&m.student)},
                    {"architecture", r.Section({
                                         {"kind", r.Choice(&m.architecture.kind, {"mlp", "cnn"})},
                                         {"hidden", r.IntList(&m.architecture.hidden, 1, 1 << 16, true)},
                                         {"channels", r.IntList(&m.architecture.channels, 1, 4096, true)},
                                     })},
                    {"precision", r.Choice(&m.precision, {"float", "int8"})},
                    {"optimize", r.Bool(&m.optimize)},
                })},
      {"batching", r.Section({
                       {"max_batch_size", r.Int32(&b.max_batch_size, 1, 4096)},
                       {"max_queue_delay_us", r.Int(&b.max_queue_delay_us, 0, 1'000'000)},
                       {"queue_capacity", r.Int32(&b.queue_capacity, 1, 1 << 20)},
                       {"inference_threads", r.Int32(&b.inference_threads, 0, 64)},
                       {"intra_op_threads", r.Int32(&b.intra_op_threads, 1, 64)},
                       {"early_dispatch", r.Bool(&b.early_dispatch)},
                   })},
      {"storage", r.Section({
                      {"state_dir", r.String(&st.state_dir)},
                      {"block_cache_mb", r.UInt(&st.block_cache_mb, 1, 1 << 16)},
                      {"write_buffer_mb", r.UInt(&st.write_buffer_mb, 1, 1 << 12)},
                      {"sync", r.Bool(&st.sync)},
                  })},
      {"replay", r.Section({
                     {"policy", r.Choice(&rp.policy, {"class_balanced", "reservoir"})},
                     {"capacity", r.UInt(&rp.capacity, 0, 10'000'000)},
                     {"max_mb", r.UInt(&rp.max_mb, 1, 1 << 20)},
                     {"holdout_fraction", r.Number(&rp.holdout_fraction, 0, 0.9, false, "in [0, 0.9]")},
                     {"holdout_max", r.UInt(&rp.holdout_max, 0, 10'000'000)},
                     {"replay_ratio", r.Number(&rp.replay_ratio, 0, 100, false, "in [0, 100]")},
                 })},
      {"learner",
       r.Section({
           {"enabled", r.Bool(&l.enabled)},
           {"trigger_count", r.UInt(&l.trigger_count, 1, 100'000'000)},
           {"trigger_interval_s", r.Int(&l.trigger_interval_s, 1, 30 * 86400)},
           {"min_samples", r.UInt(&l.min_samples, 1, 100'000'000)},
           {"epochs", r.Int32(&l.epochs, 1, 1000)},
           {"max_steps", r.Int(&l.max_steps, 0, kMaxI)},
           {"batch_size", r.Int32(&l.batch_size, 1, 65536)},
           {"learning_rate", r.Number(&l.learning_rate, 0, 10, true, "> 0 and <= 10")},
           {"optimizer", r.Choice(&l.optimizer, {"adam", "sgd"})},
           {"alpha", r.Number(&l.alpha, 0, 1, false, "in [0, 1]")},
           {"temperature", r.Number(&l.temperature, 0, 100, true, "> 0")},
           {"temperature_schedule",
            r.Section({
                {"start", r.Number(&l.temperature_schedule.start, 0, 100, true, "> 0")},
                {"end", r.Number(&l.temperature_schedule.end, 0, 100, true, "> 0")},
                {"curve", r.Choice(&l.temperature_schedule.curve, {"constant", "linear", "cosine"})},
            })},
           {"feature", r.Section({
                           {"method", r.String(&l.feature.method)},
                           {"weight", r.Number(&l.feature.weight, 0, 1000, false, ">= 0")},
                       })},
           {"balanced_finetune_epochs", r.Int32(&l.balanced_finetune_epochs, 0, 1000)},
           {"balanced_finetune_lr_scale", r.Number(&l.balanced_finetune_lr_scale, 0, 10, true, "in (0, 10]")},
           {"replay_shift_px", r.Int32(&l.replay_shift_px, 0, 8)},
           {"recycle_dormant_units", r.Bool(&l.recycle_dormant_units)},
           {"dormant_threshold", r.Number(&l.dormant_threshold, 0, 1, false, "in [0, 1]")},
           {"max_accuracy_drop", r.Number(&l.max_accuracy_drop, 0, 1, false, "in [0, 1]")},
           {"max_class_drop", r.Number(&l.max_class_drop, 0, 1, false, "in [0, 1]")},
           {"min_class_retention", r.Number(&l.min_class_retention, 0, 1, false, "in [0, 1]")},
           {"min_new_class_accuracy", r.Number(&l.min_new_class_accuracy, 0, 1, false, "in [0, 1]")},
           {"min_class_samples", r.Int(&l.min_class_samples, 1, 1'000'000)},
           {"regression_z", r.Number(&l.regression_z, 0, 10, false, "in [0, 10]")},
           {"threads", r.Int32(&l.threads, 1, 64)},
           {"nice", r.Int32(&l.nice, 0, 19)},
           {"idle_priority", r.Bool(&l.idle_priority)},
           {"yield_above_rps", r.Number(&l.yield_above_rps, 0, 1e9, false, ">= 0")},
           {"max_yield_s", r.Int(&l.max_yield_s, 0, 86400)},
           {"seed", r.UInt(&l.seed, 0, std::numeric_limits<int64_t>::max())},
       })},
      {"capture", r.Section({
                      {"fraction", r.Number(&c.capture.fraction, 0, 1, false, "in [0, 1]")},
                      {"feedback_ttl_s", r.Int(&c.capture.feedback_ttl_s, 1, 30 * 86400)},
                  })},
      {"logging", r.Section({
                      {"level", r.Choice(&c.logging.level, {"debug", "info", "warning", "error"})},
                  })},
  };
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
    result.errors.push_back({"", "expected a mapping at the top level", MarkOf(root).first,
                             MarkOf(root).second});
    return result;
  }
  Reader reader(&result.errors);
  try {
    reader.Map(root, "", Schema(reader, result.config));
  } catch (const YAML::Exception& e) {
    result.errors.push_back({"", "invalid YAML: " + e.msg, e.mark.line + 1, e.mark.column + 1});
    return result;
  }
  if (!result.errors.empty()) return result;
  for (ConfigError e : Validate(result.config)) {
    auto it = reader.marks().find(e.key_path);
    if (it != reader.marks().end()) {
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
