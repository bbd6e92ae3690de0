// The systemd directory rule (daemon/serve.h): which config paths
// $STATE_DIRECTORY, $RUNTIME_DIRECTORY and $CONFIGURATION_DIRECTORY change.
#include <doctest/doctest.h>

#include "daemon/serve.h"
#include "tests/systemd/systemd_test_util.h"

namespace distilld::testing {

TEST_CASE("paths: relative state dir and unix socket move under systemd's directories") {
  ScopedEnv state("STATE_DIRECTORY", "/var/lib/distilld");
  ScopedEnv runtime("RUNTIME_DIRECTORY", "/run/distilld");
  config::Config c;  // defaults: state_dir "./state", no unix socket
  c.server.unix_socket = "distilld.sock";
  daemon::ApplySystemdDirectories(&c);
  CHECK(c.storage.state_dir == "/var/lib/distilld/state");
  CHECK(c.server.unix_socket == "/run/distilld/distilld.sock");
  // Applying it again (SIGHUP re-reads the file, then applies it) is stable.
  daemon::ApplySystemdDirectories(&c);
  CHECK(c.storage.state_dir == "/var/lib/distilld/state");
}

TEST_CASE("paths: absolute paths, an empty unix socket and unset variables stay as they are") {
  {
    ScopedEnv state("STATE_DIRECTORY", "/var/lib/distilld");
    ScopedEnv runtime("RUNTIME_DIRECTORY", "/run/distilld");
    config::Config c;
    c.storage.state_dir = "/srv/distilld";
    c.server.unix_socket = "";
    daemon::ApplySystemdDirectories(&c);
    CHECK(c.storage.state_dir == "/srv/distilld");
    CHECK(c.server.unix_socket.empty());
  }
  ScopedEnv state("STATE_DIRECTORY", nullptr);
  ScopedEnv runtime("RUNTIME_DIRECTORY", nullptr);
  config::Config c;
  c.server.unix_socket = "distilld.sock";
  daemon::ApplySystemdDirectories(&c);
  CHECK(c.storage.state_dir == "./state");
  CHECK(c.server.unix_socket == "distilld.sock");
}

TEST_CASE("paths: a directory list uses its first entry") {
  ScopedEnv state("STATE_DIRECTORY", "/var/lib/a:/var/lib/b");
  config::Config c;
  c.storage.state_dir = "data";
  daemon::ApplySystemdDirectories(&c);
  CHECK(c.storage.state_dir == "/var/lib/a/data");
}

TEST_CASE("paths: the default config file follows $CONFIGURATION_DIRECTORY") {
  {
    ScopedEnv conf("CONFIGURATION_DIRECTORY", "/etc/distilld-test");
    CHECK(daemon::DefaultConfigPath() == "/etc/distilld-test/distilld.yaml");
  }
  ScopedEnv conf("CONFIGURATION_DIRECTORY", nullptr);
  CHECK(daemon::DefaultConfigPath() == "/etc/distilld/distilld.yaml");
}

}  // namespace distilld::testing
