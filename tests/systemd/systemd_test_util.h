// Test helpers that play systemd's part: a $NOTIFY_SOCKET listener, scoped
// environment variables, listening sockets, and passing sockets as fds 3..
// with $LISTEN_FDS/$LISTEN_PID, either in this process or in a child process
// that execs the real daemon (ChildProcess, PrepareListenFdsInChild).
//
// Not thread-safe (they change the process environment and fd table); one
// test at a time. Header-only so process-level tests can include it as is.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace distilld::testing {

// Sets (or with nullptr unsets) an environment variable; restores the old
// value when destroyed.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// One datagram received on the notify socket, with its arrival time.
struct NotifyMessage {
  std::string text;  // e.g. "READY=1" or "RELOADING=1\nMONOTONIC_USEC=123"
  std::chrono::steady_clock::time_point at;
  // True if one of the message's lines is exactly `line`.
  bool HasLine(std::string_view line) const {
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      if (std::string_view(text).substr(pos, end - pos) == line) return true;
      pos = end + 1;
    }
    return false;
  }
  // The value of "KEY=value" in the message, if present.
  std::optional<std::string> Value(std::string_view key) const {
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view l = std::string_view(text).substr(pos, end - pos);
      if (l.size() > key.size() && l.substr(0, key.size()) == key && l[key.size()] == '=') {
        return std::string(l.substr(key.size() + 1));
      }
      pos = end + 1;
    }
    return std::nullopt;
  }
};

// An AF_UNIX datagram socket bound at <dir>/notify.sock: what systemd listens
// on for sd_notify. Point $NOTIFY_SOCKET at path().
class NotifyListener {
 public:
  explicit NotifyListener(const std::string& dir) : path_(dir + "/notify.sock") {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) std::abort();
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof(addr.sun_path)) std::abort();
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  }
  ~NotifyListener() { ::close(fd_); }
  NotifyListener(const NotifyListener&) = delete;
  NotifyListener& operator=(const NotifyListener&) = delete;

  const std::string& path() const { return path_; }

  // The next datagram, or nullopt if none arrives within `timeout`.
  std::optional<NotifyMessage> Receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (r <= 0) return std::nullopt;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n < 0) return std::nullopt;
    return NotifyMessage{std::string(buf, static_cast<size_t>(n)),
                         std::chrono::steady_clock::now()};
  }

  // Every datagram arriving within `duration`.
  std::vector<NotifyMessage> ReceiveFor(std::chrono::milliseconds duration) {
    std::vector<NotifyMessage> out;
    auto deadline = std::chrono::steady_clock::now() + duration;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      auto m = Receive(left);
      if (m) out.push_back(std::move(*m));
    }
    return out;
  }

  // Datagrams up to and including the first with line `line`; empty if it
  // does not arrive within `timeout` (the messages seen are then in *seen).
  std::vector<NotifyMessage> ReceiveUntil(std::string_view line, std::chrono::milliseconds timeout,
                                          std::vector<NotifyMessage>* seen = nullptr) {
    std::vector<NotifyMessage> out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      auto m = Receive(left);
      if (!m) break;
      bool found = m->HasLine(line);
      out.push_back(std::move(*m));
      if (found) return out;
    }
    if (seen != nullptr) *seen = std::move(out);
    return {};
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// A listening TCP socket on 127.0.0.1 with a kernel-chosen port.
inline int ListenTcpLoopback(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) std::abort();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  if (::listen(fd, 16) != 0) std::abort();
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (port != nullptr) *port = ntohs(addr.sin_port);
  return fd;
}

// A listening (or, with listen=false, merely bound) Unix stream socket.
inline int ListenUnix(const std::string& path, bool listen = true) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) std::abort();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) std::abort();
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  if (listen && ::listen(fd, 16) != 0) std::abort();
  return fd;
}

// Moves `fds` to 3, 4, ... in order and sets LISTEN_FDS, LISTEN_PID=getpid()
// and LISTEN_FDNAMES (":"-joined `names`, if given), as systemd does before
// exec. For a forked child before execve of the daemon; uses only fcntl,
// dup2, close, snprintf and setenv. Returns false on failure.
inline bool PrepareListenFdsInChild(const std::vector<int>& fds, const char* names = nullptr) {
  const int n = static_cast<int>(fds.size());
  // First move every fd above the target range so dup2 never clobbers a
  // source that sits at 3..3+n-1.
  std::vector<int> high(fds.size());
  for (int i = 0; i < n; ++i) {
    high[i] = ::fcntl(fds[i], F_DUPFD, 3 + n);
    if (high[i] < 0) return false;
  }
  for (int i = 0; i < n; ++i) {
    if (::dup2(high[i], 3 + i) < 0) return false;
    ::close(high[i]);
    // systemd passes the fds without close-on-exec.
    ::fcntl(3 + i, F_SETFD, 0);
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%d", n);
  ::setenv("LISTEN_FDS", buf, 1);
  std::snprintf(buf, sizeof(buf), "%d", static_cast<int>(::getpid()));
  ::setenv("LISTEN_PID", buf, 1);
  if (names != nullptr) {
    ::setenv("LISTEN_FDNAMES", names, 1);
  } else {
    ::unsetenv("LISTEN_FDNAMES");
  }
  return true;
}

// In-process variant for unit tests: saves whatever is at fds 3.., installs
// `fds` there with the LISTEN_* variables, and restores both when destroyed.
class ScopedListenFds {
 public:
  explicit ScopedListenFds(const std::vector<int>& fds, const char* names = nullptr,
                           const char* pid_override = nullptr)
      : n_(static_cast<int>(fds.size())),
        listen_fds_("LISTEN_FDS", nullptr),
        listen_pid_("LISTEN_PID", nullptr),
        listen_fdnames_("LISTEN_FDNAMES", nullptr) {
    for (int i = 0; i < n_; ++i) {
      // F_DUPFD_CLOEXEC fails with EBADF if nothing is open there.
      saved_.push_back(::fcntl(3 + i, F_DUPFD_CLOEXEC, 64));
    }
    if (!PrepareListenFdsInChild(fds, names)) std::abort();
    if (pid_override != nullptr) ::setenv("LISTEN_PID", pid_override, 1);
  }
  ~ScopedListenFds() {
    for (int i = 0; i < n_; ++i) {
      if (saved_[i] >= 0) {
        ::dup2(saved_[i], 3 + i);
        ::close(saved_[i]);
      } else {
        ::close(3 + i);  // may already be closed by the code under test
      }
    }
  }
  ScopedListenFds(const ScopedListenFds&) = delete;
  ScopedListenFds& operator=(const ScopedListenFds&) = delete;

 private:
  int n_;
  std::vector<int> saved_;
  // Restore the variables' previous values (normally unset).
  ScopedEnv listen_fds_;
  ScopedEnv listen_pid_;
  ScopedEnv listen_fdnames_;
};

// A child process started the way systemd starts a service: environment
// changes applied, sockets passed as fds 3.. with LISTEN_* naming the child,
// stdout/stderr optionally to a file. For process-level tests of the real
// daemon ($DISTILLD_BINARY). The destructor SIGKILLs and reaps a child that
// is still running. Not thread-safe.
class ChildProcess {
 public:
  struct Options {
    std::vector<std::string> argv;  // argv[0] is the executable path
    // Set (value) or unset (nullopt) in the child only.
    std::vector<std::pair<std::string, std::optional<std::string>>> env;
    std::vector<int> listen_fds;  // passed as 3.. (none: LISTEN_* unset)
    std::string listen_fdnames;   // ":"-joined, optional
    std::string output_path;      // "" = inherit stdout/stderr
  };

  // Forks and execs; returns false if fork failed. An exec failure makes the
  // child exit with 127.
  bool Start(const Options& options) {
    std::vector<std::string> args = options.argv;
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ > 0) return true;
    // Child. It dies with the test (a timeout, a crash, a SIGTERM), never
    // left running on the machine.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!options.output_path.empty()) {
      int out =
          ::open(options.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (out < 0) ::_exit(126);
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    for (const auto& [name, value] : options.env) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
    if (options.listen_fds.empty()) {
      ::unsetenv("LISTEN_FDS");
      ::unsetenv("LISTEN_PID");
      ::unsetenv("LISTEN_FDNAMES");
    } else if (!PrepareListenFdsInChild(options.listen_fds, options.listen_fdnames.empty()
                                                                ? nullptr
                                                                : options.listen_fdnames.c_str())) {
      ::_exit(126);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }

  pid_t pid() const { return pid_; }
  bool Signal(int sig) const { return pid_ > 0 && ::kill(pid_, sig) == 0; }

  // The wait status once the child exited within `timeout`, else nullopt.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return status_;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        status_ = status;
        return status_;
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  ~ChildProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace distilld::testing
