// Router: maps (method, path) to a handler, with {name} path parameters.
//
// Patterns are split on '/'; a segment "{x}" matches any one non-empty
// segment and is captured as x. Literal segments win over parameters when
// both match (so /v2/models/{name}/ready and /v2/models/{name}/infer never
// collide). Each route carries an endpoint label for metrics and logs, and
// its access: open, or the bearer token (the one auth mechanism; the session
// answers 401 before the handler runs when Authorized() says no).
//
// Thread-safety: Add() before the server starts (or under external
// synchronisation); Match() is const and may be called concurrently.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "daemon/http/auth.h"
#include "daemon/http/types.h"

namespace distilld::daemon {

enum class Access {
  kOpen,   // anyone who can reach the port
  kToken,  // the bearer token, when auth is on (server.auth_token_file)
};

class Router {
 public:
  struct Match {
    enum class Kind { kFound, kNotFound, kMethodNotAllowed };
    Kind kind = Kind::kNotFound;
    const Handler* handler = nullptr;  // set when kFound; owned by the router
    std::string endpoint;              // route label; "unknown" when not found
    RouteParams params;
    std::string allow;                 // methods for 405, e.g. "GET, POST"
    Access access = Access::kOpen;     // the matched route's
  };

  // `endpoint` is a short stable label such as "infer" or "health_ready".
  void Add(HttpVerb method, std::string_view pattern, std::string endpoint, Handler handler,
           Access access = Access::kOpen);
  // The token kToken routes need; not owned, must outlive the router. Null
  // (the default) or an authorizer without a token lets every request in.
  void set_authorizer(const Authorizer* authorizer) { authorizer_ = authorizer; }
  // True if `match` may run for a request with this Authorization header.
  bool Authorized(const Match& match, std::string_view authorization_header) const;

  // `target` may carry a query string, which is ignored.
  Match Find(HttpVerb method, std::string_view target) const;

 private:
  struct Route {
    HttpVerb method;
    std::vector<std::string> segments;
    std::string endpoint;
    Handler handler;
    Access access;
    int literal_count = 0;
  };
  std::vector<Route> routes_;
  const Authorizer* authorizer_ = nullptr;
};

}  // namespace distilld::daemon
