// The dashboard: GET / serves one self-contained page (daemon/api/dashboard/
// index.html, compiled in; no CDN, no third-party script) that polls the
// daemon's own JSON endpoints: /v1/stats, /v1/models/{name}/versions,
// /v1/learner and /v1/events.
#pragma once

#include "daemon/http/router.h"

namespace distilld::daemon {

void RegisterDashboard(Router* router);

}  // namespace distilld::daemon
