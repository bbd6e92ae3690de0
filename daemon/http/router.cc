#include "daemon/http/router.h"

#include <boost/beast/http/verb.hpp>

#include "daemon/http/json_util.h"

namespace distilld::daemon {
namespace {

std::vector<std::string_view> Split(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

bool IsParam(const std::string& seg) { return seg.size() >= 2 && seg.front() == '{' && seg.back() == '}'; }

}  // namespace

HttpResponse MakeResponse(HttpStatus status, std::string body, std::string_view content_type) {
  HttpResponse res{status, 11};
  res.set(boost::beast::http::field::content_type,
          boost::beast::string_view(content_type.data(), content_type.size()));
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

HttpResponse MakeError(HttpStatus status, std::string_view message) {
  std::string body = "{\"error\":";
  AppendJsonString(&body, message);
  body += "}";
  return MakeResponse(status, std::move(body));
}

void Router::Add(HttpVerb method, std::string_view pattern, std::string endpoint, Handler handler,
                 Access access) {
  Route r{method, {}, std::move(endpoint), std::move(handler), access, 0};
  for (auto seg : Split(pattern)) {
    r.segments.emplace_back(seg);
    if (!IsParam(r.segments.back())) ++r.literal_count;
  }
  routes_.push_back(std::move(r));
}

Router::Match Router::Find(HttpVerb method, std::string_view target) const {
  size_t q = target.find('?');
  if (q != std::string_view::npos) target = target.substr(0, q);
  std::vector<std::string_view> segs = Split(target);

  Match out;
  out.endpoint = "unknown";
  const Route* best = nullptr;
  std::string allow;
  for (const Route& r : routes_) {
    if (r.segments.size() != segs.size()) continue;
    bool ok = true;
    for (size_t i = 0; i < segs.size() && ok; ++i) {
      ok = IsParam(r.segments[i]) ? !segs[i].empty() : r.segments[i] == segs[i];
    }
    if (!ok) continue;
    if (r.method != method) {
      auto verb_name = boost::beast::http::to_string(r.method);
      std::string_view name(verb_name.data(), verb_name.size());
      if (allow.find(name) == std::string::npos) {
        if (!allow.empty()) allow += ", ";
        allow.append(name.data(), name.size());
      }
      continue;
    }
    if (best == nullptr || r.literal_count > best->literal_count) best = &r;
  }
  if (best == nullptr) {
    if (!allow.empty()) {
      out.kind = Match::Kind::kMethodNotAllowed;
      out.allow = std::move(allow);
    }
    return out;
  }
  out.kind = Match::Kind::kFound;
  out.handler = &best->handler;
  out.endpoint = best->endpoint;
  out.access = best->access;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (IsParam(best->segments[i])) {
      const std::string& s = best->segments[i];
      out.params.Add(s.substr(1, s.size() - 2), std::string(segs[i]));
    }
  }
  return out;
}

bool Router::Authorized(const Match& match, std::string_view authorization_header) const {
  if (match.access == Access::kOpen || authorizer_ == nullptr) return true;
  return authorizer_->Allows(authorization_header);
}

}  // namespace distilld::daemon
