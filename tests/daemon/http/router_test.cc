#include <doctest/doctest.h>

#include "daemon/http/router.h"

#include <sys/stat.h>

#include <fstream>

#include "tests/support/temp_dir.h"

using namespace distilld::daemon;

namespace {
Handler Named(std::string* hit, std::string name) {
  return [hit, name](const HttpRequest&, const RouteParams&, Responder) { *hit = name; };
}
}  // namespace

TEST_CASE("router: path parameters, literal precedence, 404 and 405") {
  Router r;
  std::string hit;
  r.Add(HttpVerb::get, "/v2/models/{name}", "meta", Named(&hit, "meta"));
  r.Add(HttpVerb::get, "/v2/models/{name}/ready", "ready", Named(&hit, "ready"));
  r.Add(HttpVerb::get, "/v2/models/{name}/versions/{version}", "meta_v", Named(&hit, "meta_v"));
  r.Add(HttpVerb::post, "/v2/models/{name}/infer", "infer", Named(&hit, "infer"));
  r.Add(HttpVerb::get, "/v2/models/{name}/{what}", "generic", Named(&hit, "generic"));

  auto m = r.Find(HttpVerb::get, "/v2/models/fashion/versions/12?x=1");
  REQUIRE(m.kind == Router::Match::Kind::kFound);
  CHECK(m.endpoint == "meta_v");
  CHECK(m.params.Get("name") == "fashion");
  CHECK(m.params.Get("version") == "12");
  CHECK_FALSE(m.params.Has("what"));

  m = r.Find(HttpVerb::get, "/v2/models/fashion/ready");
  REQUIRE(m.kind == Router::Match::Kind::kFound);
  CHECK(m.endpoint == "ready");  // the literal wins over {what}
  (*m.handler)(HttpRequest{}, m.params, nullptr);
  CHECK(hit == "ready");

  m = r.Find(HttpVerb::get, "/v2/models/fashion/other");
  CHECK(m.endpoint == "generic");
  CHECK(m.params.Get("what") == "other");

  m = r.Find(HttpVerb::get, "/v2/models/fashion/infer");  // generic GET matches
  CHECK(m.endpoint == "generic");
  m = r.Find(HttpVerb::put, "/v2/models/fashion/infer");
  CHECK(m.kind == Router::Match::Kind::kMethodNotAllowed);
  CHECK(m.allow.find("POST") != std::string::npos);
  CHECK(m.allow.find("GET") != std::string::npos);

  m = r.Find(HttpVerb::get, "/v3/nothing");
  CHECK(m.kind == Router::Match::Kind::kNotFound);
  CHECK(m.endpoint == "unknown");
  CHECK(r.Find(HttpVerb::get, "/v2/models").kind == Router::Match::Kind::kNotFound);
}

TEST_CASE("router: MakeError escapes the message into valid JSON") {
  HttpResponse res = MakeError(HttpStatus::bad_request, "bad \"x\"\n\\");
  CHECK(res.result_int() == 400);
  CHECK(res.body() == R"({"error":"bad \"x\"\n\\"})");
  CHECK(res[boost::beast::http::field::content_type] == "application/json");
}

TEST_CASE("router: a route's access flag is the one auth check; open routes need nothing") {
  distilld::testing::TempDir dir;
  const std::string token_file = dir.str("token");
  std::ofstream(token_file) << "s3cret\n";
  REQUIRE(::chmod(token_file.c_str(), 0600) == 0);
  auto auth = Authorizer::FromTokenFile(token_file);
  REQUIRE(auth.ok());
  Router r;
  Handler h = [](const HttpRequest&, const RouteParams&, Responder) {};
  r.Add(HttpVerb::post, "/v1/samples", "samples", h, Access::kToken);
  r.Add(HttpVerb::get, "/v1/stats", "stats", h);
  Router::Match write = r.Find(HttpVerb::post, "/v1/samples");
  Router::Match read = r.Find(HttpVerb::get, "/v1/stats");
  CHECK(write.access == Access::kToken);
  CHECK(read.access == Access::kOpen);
  // No authorizer yet: nothing to check against.
  CHECK(r.Authorized(write, ""));
  r.set_authorizer(auth->get());
  CHECK_FALSE(r.Authorized(write, ""));
  CHECK_FALSE(r.Authorized(write, "Bearer wrong"));
  CHECK(r.Authorized(write, "Bearer s3cret"));
  CHECK(r.Authorized(read, ""));
}
