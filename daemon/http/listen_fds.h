// Socket activation: listening sockets handed over by systemd.
//
// When distilld.socket starts the service, systemd passes the already-bound
// listening sockets as fds 3.. and sets $LISTEN_FDS, $LISTEN_PID (and
// $LISTEN_FDNAMES). TakeListenFds() claims them and sorts them into TCP and
// Unix stream sockets, so the daemon serves on them instead of binding its
// own. The fds are native handles for Asio:
//
//   for (const auto& s : sockets->tcp)
//     acceptor.assign(s.family == AF_INET6 ? tcp::v6() : tcp::v4(), s.fd);
//   for (const auto& s : sockets->unix_stream)
//     unix_acceptor.assign(boost::asio::local::stream_protocol(), s.fd);
//
// Not thread-safe (it reads and may unset the process environment): call it
// once, early in main(), before other threads start.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace distilld::daemon {

struct InheritedSocket {
  int fd = -1;
  int family = 0;             // AF_INET, AF_INET6 or AF_UNIX
  std::string name;           // FileDescriptorName= from the .socket unit ("" if none)
  std::string local_address;  // "127.0.0.1:8080", "[::1]:8080" or a path, for logs
};

struct InheritedSockets {
  std::vector<InheritedSocket> tcp;          // AF_INET/AF_INET6 SOCK_STREAM, listening
  std::vector<InheritedSocket> unix_stream;  // AF_UNIX SOCK_STREAM, listening
  bool empty() const { return tcp.empty() && unix_stream.empty(); }
};

struct ListenFdsOptions {
  // Unset $LISTEN_FDS, $LISTEN_PID and $LISTEN_FDNAMES once read, so that a
  // child process cannot mistake the fds for its own. Default true; tests
  // that inspect the environment afterwards may turn it off.
  bool unset_environment = true;
};

// Claims the sockets systemd passed to this process. Returns an empty set when
// the process was not socket-activated ($LISTEN_PID absent or naming another
// process). The caller owns the returned fds (close-on-exec is set).
// InvalidArgument if any passed fd is not a listening TCP or Unix stream
// socket (a .socket unit with ListenDatagram= or Accept=yes is a
// misconfiguration, not something to ignore); all passed fds are closed then.
// IoError if $LISTEN_FDS is malformed.
Result<InheritedSockets> TakeListenFds(const ListenFdsOptions& options);

}  // namespace distilld::daemon
