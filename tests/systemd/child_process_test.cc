// The process-level helpers that tests of the real daemon use: a child
// started like a systemd service gets the sockets at fds 3.. with LISTEN_PID
// naming itself (after exec), can reach the notify socket, and is signalled
// and reaped.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <string>

#include "tests/support/temp_dir.h"
#include "tests/systemd/systemd_test_util.h"

namespace distilld::testing {
namespace {

using std::chrono::milliseconds;

TEST_CASE("a child started like a service sees its sockets and notifies") {
  TempDir dir;
  NotifyListener listener(dir.str());
  int tcp = ListenTcpLoopback(nullptr);
  int unix_fd = ListenUnix(dir.str("child.sock"));

  // The shell checks what the daemon would check, then reports over the
  // notify socket with systemd's own client.
  const std::string script =
      "[ \"$LISTEN_PID\" = \"$$\" ] || exit 3; "
      "[ \"$LISTEN_FDS\" = 2 ] || exit 4; "
      "[ \"$LISTEN_FDNAMES\" = http:unix ] || exit 5; "
      "[ -S /proc/$$/fd/3 ] && [ -S /proc/$$/fd/4 ] || exit 6; "
      "[ -z \"$DROPPED\" ] || exit 7; "
      "systemd-notify --no-block --ready --status=\"child $$ up\" || exit 8; "
      "exit 0";
  ::setenv("DROPPED", "x", 1);
  ChildProcess child;
  ChildProcess::Options options;
  options.argv = {"/bin/sh", "-c", script};
  options.env = {{"NOTIFY_SOCKET", listener.path()}, {"DROPPED", std::nullopt}};
  options.listen_fds = {tcp, unix_fd};
  options.listen_fdnames = "http:unix";
  options.output_path = dir.str("child.log");
  REQUIRE(child.Start(options));
  const pid_t pid = child.pid();
  ::unsetenv("DROPPED");

  auto msgs = listener.ReceiveUntil("READY=1", milliseconds(10000));
  REQUIRE_FALSE(msgs.empty());
  CHECK(msgs.back().Value("STATUS") ==
        std::optional<std::string>("child " + std::to_string(pid) + " up"));
  auto status = child.Wait(milliseconds(10000));
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  // The parent's own environment is untouched.
  CHECK(std::getenv("LISTEN_FDS") == nullptr);
  ::close(tcp);
  ::close(unix_fd);
}

TEST_CASE("SIGTERM reaches the child and its exit status is reported") {
  ChildProcess child;
  ChildProcess::Options options;
  options.argv = {"/bin/sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"};
  REQUIRE(child.Start(options));
  CHECK_FALSE(child.Wait(milliseconds(200)).has_value());  // still running
  REQUIRE(child.Signal(SIGTERM));
  auto status = child.Wait(milliseconds(10000));
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 7);
  CHECK_FALSE(child.Signal(SIGTERM));  // reaped: no longer signalled
}

TEST_CASE("an executable that cannot be run exits 127") {
  ChildProcess child;
  ChildProcess::Options options;
  options.argv = {"/nonexistent/distilld"};
  REQUIRE(child.Start(options));
  auto status = child.Wait(milliseconds(10000));
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 127);
}

}  // namespace
}  // namespace distilld::testing
