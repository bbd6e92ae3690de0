// DiffConfigs: which runtime-changeable fields a SIGHUP reload changes, and
// which changed fields only take effect after a restart.
#include <sstream>

#include "daemon/daemon.h"

namespace distilld::daemon {
namespace {

template <typename T>
std::string Show(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
std::string Show(const std::string& v) { return "'" + v + "'"; }
std::string Show(bool v) { return v ? "true" : "false"; }
template <typename T>
std::string Show(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + Show(v[i]);
  return s + "]";
}

}  // namespace

ConfigDiff DiffConfigs(const config::Config& a, const config::Config& b) {
  ConfigDiff d;
#define DISTILLD_DIFF(list, field)                                                         \
  if (!(a.field == b.field)) d.list.push_back(#field ": " + Show(a.field) + " -> " + Show(b.field))
  DISTILLD_DIFF(applied, logging.level);
  DISTILLD_DIFF(applied, server.max_body_bytes);
  DISTILLD_DIFF(applied, server.max_header_bytes);
  DISTILLD_DIFF(applied, server.read_timeout_ms);
  DISTILLD_DIFF(applied, server.idle_timeout_ms);
  DISTILLD_DIFF(applied, server.max_connections);
  DISTILLD_DIFF(applied, server.drain_timeout_ms);
  DISTILLD_DIFF(applied, batching.max_batch_size);
  DISTILLD_DIFF(applied, batching.max_queue_delay_us);
  DISTILLD_DIFF(applied, batching.early_dispatch);
  DISTILLD_DIFF(applied, batching.queue_capacity);
  DISTILLD_DIFF(applied, learner.trigger_count);
  DISTILLD_DIFF(applied, learner.trigger_interval_s);
  DISTILLD_DIFF(applied, learner.min_samples);

  DISTILLD_DIFF(need_restart, server.listen);
  DISTILLD_DIFF(need_restart, server.unix_socket);
  DISTILLD_DIFF(need_restart, server.unix_socket_mode);
  DISTILLD_DIFF(need_restart, server.io_threads);
  DISTILLD_DIFF(need_restart, server.loop_per_thread);
  DISTILLD_DIFF(need_restart, server.auth_token_file);
  DISTILLD_DIFF(need_restart, server.auth_inference);
  DISTILLD_DIFF(need_restart, batching.inference_threads);
  DISTILLD_DIFF(need_restart, batching.intra_op_threads);
  DISTILLD_DIFF(need_restart, model.name);
  DISTILLD_DIFF(need_restart, model.input_name);
  DISTILLD_DIFF(need_restart, model.input_shape);
  DISTILLD_DIFF(need_restart, model.classes);
  DISTILLD_DIFF(need_restart, model.teacher);
  DISTILLD_DIFF(need_restart, model.student);
  DISTILLD_DIFF(need_restart, model.architecture.kind);
  DISTILLD_DIFF(need_restart, model.architecture.hidden);
  DISTILLD_DIFF(need_restart, model.architecture.channels);
  DISTILLD_DIFF(need_restart, model.precision);
  DISTILLD_DIFF(need_restart, model.optimize);
  DISTILLD_DIFF(need_restart, storage.state_dir);
  DISTILLD_DIFF(need_restart, storage.block_cache_mb);
  DISTILLD_DIFF(need_restart, storage.write_buffer_mb);
  DISTILLD_DIFF(need_restart, storage.sync);
  DISTILLD_DIFF(need_restart, learner.enabled);
  DISTILLD_DIFF(need_restart, learner.threads);
  DISTILLD_DIFF(need_restart, capture.fraction);
#undef DISTILLD_DIFF
  return d;
}

}  // namespace distilld::daemon
