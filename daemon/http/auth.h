// Bearer-token authorisation for the /v1 API (and, optionally, inference).
//
// The token is read once from server.auth_token_file, which must not be
// readable by others (mode & 0007 == 0): a token anyone on the box can read
// protects nothing, so the daemon refuses to start. Comparison is in constant
// time. Thread-safe after construction (immutable).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace distilld::daemon {

class Authorizer {
 public:
  // "" -> an authorizer that allows everything. Otherwise the file's first
  // line (trimmed) is the token. FailedPrecondition naming the file when it
  // is readable or writable by others, empty, or unreadable.
  static Result<std::unique_ptr<Authorizer>> FromTokenFile(const std::string& path);

  bool enabled() const { return !token_.empty(); }
  // True if auth is off or `authorization_header` is "Bearer <token>".
  bool Allows(std::string_view authorization_header) const;

 private:
  explicit Authorizer(std::string token) : token_(std::move(token)) {}
  std::string token_;
};

}  // namespace distilld::daemon
