#include "daemon/api/dashboard.h"

#include <string>
#include <string_view>

namespace distilld::daemon {

extern const std::string_view kDashboardHtml;

void RegisterDashboard(Router* router) {
  router->Add(HttpVerb::get, "/", "dashboard", [](const HttpRequest&, const RouteParams&, Responder respond) {
    HttpResponse res = MakeResponse(HttpStatus::ok, std::string(kDashboardHtml), "text/html; charset=utf-8");
    res.set(boost::beast::http::field::cache_control, "no-cache");
    respond(std::move(res));
  });
}

}  // namespace distilld::daemon
