#include "daemon/http/listen_fds.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace distilld::daemon {
namespace {

std::string LocalAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&ss);
    size_t path_len =
        len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    if (path_len == 0) return "(unnamed)";
    if (un->sun_path[0] == '\0') return "@" + std::string(un->sun_path + 1, path_len - 1);
    return std::string(un->sun_path, ::strnlen(un->sun_path, path_len));
  }
  return "?";
}

int SocketFamily(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  return ss.ss_family;
}

}  // namespace

Result<InheritedSockets> TakeListenFds(const ListenFdsOptions& options) {
  char** names = nullptr;
  int n = sd_listen_fds_with_names(options.unset_environment ? 1 : 0, &names);
  if (n < 0) return Status::IoError(std::string("sd_listen_fds: ") + std::strerror(-n));

  InheritedSockets out;
  std::string bad;
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    InheritedSocket s;
    s.fd = fd;
    if (names != nullptr && names[i] != nullptr && std::strcmp(names[i], "unknown") != 0) {
      s.name = names[i];
    }
    s.local_address = LocalAddress(fd);
    if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1, /*port=*/0) > 0) {
      s.family = SocketFamily(fd);
      out.tcp.push_back(std::move(s));
    } else if (sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0) > 0) {
      s.family = AF_UNIX;
      out.unix_stream.push_back(std::move(s));
    } else {
      if (!bad.empty()) bad += ", ";
      bad += "fd " + std::to_string(fd) + " (" + s.local_address + ")";
    }
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  if (!bad.empty()) {
    for (int i = 0; i < n; ++i) ::close(SD_LISTEN_FDS_START + i);
    return Status::InvalidArgument(
        "socket activation: not a listening TCP or Unix stream socket: " + bad +
        " (use ListenStream= and Accept=no in the .socket unit)");
  }
  return out;
}

}  // namespace distilld::daemon
