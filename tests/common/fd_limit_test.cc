#include "common/fd_limit.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <sys/resource.h>

namespace distilld {
namespace {

TEST_CASE("RaiseFdLimit raises the soft limit up to the hard one, never lowers it") {
  rlimit before{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
  // Below the current soft limit: nothing changes.
  Result<uint64_t> same = RaiseFdLimit(16);
  REQUIRE(same.ok());
  CHECK(*same == before.rlim_cur);
  // Lower the soft limit (allowed), then ask for more than it.
  rlimit lowered = before;
  lowered.rlim_cur = std::min<rlim_t>(before.rlim_cur, 256);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
  const uint64_t want = std::min<uint64_t>(before.rlim_max, 300);
  Result<uint64_t> raised = RaiseFdLimit(want);
  REQUIRE(raised.ok());
  CHECK(*raised == std::max<uint64_t>(want, lowered.rlim_cur));
  rlimit now{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &now) == 0);
  CHECK(now.rlim_cur == *raised);
  // Past the hard limit: capped at it.
  if (before.rlim_max != RLIM_INFINITY) {
    Result<uint64_t> capped = RaiseFdLimit(static_cast<uint64_t>(before.rlim_max) + 1000);
    REQUIRE(capped.ok());
    CHECK(*capped == before.rlim_max);
  }
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &before) == 0);
}

}  // namespace
}  // namespace distilld
