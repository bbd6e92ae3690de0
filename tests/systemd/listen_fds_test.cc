// Socket activation with real listening sockets passed as fds 3.. the way
// systemd passes them.
#include "daemon/http/listen_fds.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cstdlib>
#include <string>

#include "tests/support/temp_dir.h"
#include "tests/systemd/systemd_test_util.h"

namespace distilld::daemon {
namespace {

using testing::ListenTcpLoopback;
using testing::ListenUnix;
using testing::ScopedEnv;
using testing::ScopedListenFds;
using testing::TempDir;

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

int ListenTcp6Loopback(int* port) {
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin6_port);
  return fd;
}

TEST_CASE("not socket-activated: no sockets") {
  ScopedEnv fds("LISTEN_FDS", nullptr);
  ScopedEnv pid("LISTEN_PID", nullptr);
  auto got = TakeListenFds({});
  REQUIRE(got.ok());
  CHECK(got->empty());
}

TEST_CASE("TCP and Unix listening sockets are sorted, named and usable by Asio") {
  TempDir dir;
  int port = 0;
  int tcp = ListenTcpLoopback(&port);
  int port6 = 0;
  int tcp6 = ListenTcp6Loopback(&port6);
  const std::string path = dir.str("distilld.sock");
  int unix_fd = ListenUnix(path);
  {
    ScopedListenFds passed({tcp, unix_fd, tcp6}, "http:unix:http6");
    auto got = TakeListenFds({});
    REQUIRE(got.ok());
    REQUIRE(got->tcp.size() == 2);
    REQUIRE(got->unix_stream.size() == 1);
    CHECK(got->tcp[0].fd == 3);
    CHECK(got->tcp[0].family == AF_INET);
    CHECK(got->tcp[0].name == "http");
    CHECK(got->tcp[0].local_address == "127.0.0.1:" + std::to_string(port));
    CHECK(got->tcp[1].fd == 5);
    CHECK(got->tcp[1].family == AF_INET6);
    CHECK(got->tcp[1].name == "http6");
    CHECK(got->tcp[1].local_address == "[::1]:" + std::to_string(port6));
    CHECK(got->unix_stream[0].fd == 4);
    CHECK(got->unix_stream[0].family == AF_UNIX);
    CHECK(got->unix_stream[0].name == "unix");
    CHECK(got->unix_stream[0].local_address == path);
    // Claimed: a child process would not see them.
    CHECK(std::getenv("LISTEN_FDS") == nullptr);
    CHECK(std::getenv("LISTEN_PID") == nullptr);
    CHECK(std::getenv("LISTEN_FDNAMES") == nullptr);
    // libsystemd marks them close-on-exec.
    CHECK((::fcntl(3, F_GETFD) & FD_CLOEXEC) != 0);

    // The fds are what an Asio acceptor adopts; connections made to the
    // original addresses arrive through them.
    namespace asio = boost::asio;
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io);
    acceptor.assign(asio::ip::tcp::v4(), got->tcp[0].fd);
    asio::local::stream_protocol::acceptor unix_acceptor(io);
    unix_acceptor.assign(asio::local::stream_protocol(), got->unix_stream[0].fd);

    asio::ip::tcp::socket client(io);
    client.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)});
    asio::write(client, asio::buffer("ping", 4));
    asio::ip::tcp::socket server = acceptor.accept();
    char buf[4];
    asio::read(server, asio::buffer(buf, 4));
    CHECK(std::string(buf, 4) == "ping");

    asio::local::stream_protocol::socket uclient(io);
    uclient.connect(asio::local::stream_protocol::endpoint(path));
    asio::local::stream_protocol::socket userver = unix_acceptor.accept();
    CHECK(userver.is_open());

    // Leave the fds to ScopedListenFds to close.
    acceptor.release();
    unix_acceptor.release();
  }
  ::close(tcp);
  ::close(tcp6);
  ::close(unix_fd);
}

TEST_CASE("sockets meant for another process are left alone") {
  int tcp = ListenTcpLoopback(nullptr);
  {
    // LISTEN_PID names a different process: the variables were inherited.
    ScopedListenFds passed({tcp}, nullptr, "1");
    auto got = TakeListenFds({.unset_environment = false});
    REQUIRE(got.ok());
    CHECK(got->empty());
    CHECK(IsOpen(3));
    CHECK(std::getenv("LISTEN_FDS") != nullptr);
  }
  ::close(tcp);
}

TEST_CASE("a datagram or non-listening socket is a configuration error") {
  TempDir dir;
  int tcp = ListenTcpLoopback(nullptr);
  int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(udp >= 0);
  int bound_only = ListenUnix(dir.str("bound.sock"), /*listen=*/false);
  {
    ScopedListenFds passed({tcp, udp, bound_only});
    auto got = TakeListenFds({});
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().code() == StatusCode::kInvalidArgument);
    CHECK(got.status().message().find("fd 4") != std::string::npos);
    CHECK(got.status().message().find("fd 5") != std::string::npos);
    CHECK(got.status().message().find("fd 3") == std::string::npos);
    // Nothing leaks: every passed fd is closed.
    CHECK_FALSE(IsOpen(3));
    CHECK_FALSE(IsOpen(4));
    CHECK_FALSE(IsOpen(5));
  }
  ::close(tcp);
  ::close(udp);
  ::close(bound_only);
}

TEST_CASE("a malformed LISTEN_FDS is an error") {
  std::string self = std::to_string(::getpid());
  ScopedEnv fds("LISTEN_FDS", "three");
  ScopedEnv pid("LISTEN_PID", self.c_str());
  auto got = TakeListenFds({});
  CHECK(got.status().code() == StatusCode::kIoError);
}

// What a process-level test does before exec'ing the daemon: fork, move the
// sockets to 3.. with LISTEN_PID set to the child's pid. Here the child runs
// TakeListenFds itself and reports through its exit code.
TEST_CASE("PrepareListenFdsInChild hands sockets to a forked process") {
  TempDir dir;
  int unix_fd = ListenUnix(dir.str("child.sock"));
  int tcp = ListenTcpLoopback(nullptr);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Reversed order on purpose: the Unix socket becomes fd 3.
    if (!testing::PrepareListenFdsInChild({unix_fd, tcp}, "u:t")) ::_exit(10);
    auto got = TakeListenFds({});
    if (!got.ok()) ::_exit(11);
    if (got->unix_stream.size() != 1 || got->unix_stream[0].fd != 3) ::_exit(12);
    if (got->tcp.size() != 1 || got->tcp[0].fd != 4 || got->tcp[0].name != "t") ::_exit(13);
    ::_exit(0);
  }
  int wstatus = 0;
  REQUIRE(::waitpid(child, &wstatus, 0) == child);
  REQUIRE(WIFEXITED(wstatus));
  CHECK(WEXITSTATUS(wstatus) == 0);
  // The parent's environment and fds are untouched.
  CHECK(std::getenv("LISTEN_FDS") == nullptr);
  ::close(unix_fd);
  ::close(tcp);
}

}  // namespace
}  // namespace distilld::daemon
