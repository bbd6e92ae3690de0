#include <doctest/doctest.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/status.h"

namespace distilld {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status Quarter(int x, int* out) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  *out = q;
  return Status::Ok();
}

TEST_CASE("Status carries code and message") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.ToString() == "OK");
  Status nf = Status::NotFound("version 7");
  CHECK_FALSE(nf.ok());
  CHECK(nf.code() == StatusCode::kNotFound);
  CHECK(nf.ToString() == "NotFound: version 7");
  CHECK(nf.WithContext("activate").message() == "activate: version 7");
  // A stop someone asked for is not a failure of its own (a NaN abort is).
  CHECK(Status::Cancelled("stopped").ToString() == "Cancelled: stopped");
  CHECK(Status::Cancelled("x").code() != Status::Aborted("x").code());
}

TEST_CASE("Result and ASSIGN_OR_RETURN propagate errors") {
  int out = 0;
  CHECK(Quarter(8, &out).ok());
  CHECK(out == 2);
  Status st = Quarter(6, &out);
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(st.message() == "odd: 3");
  Result<int> r = Half(4);
  REQUIRE(r.ok());
  CHECK(*r == 2);
}

TEST_CASE("ManualClock moves only when told") {
  ManualClock clock(1000);
  CHECK(clock.NowMicros() == 1000);
  clock.Advance(500);
  CHECK(clock.NowMicros() == 1500);
  CHECK(Clock::Real()->NowMicros() > 1'600'000'000'000'000);
}

TEST_CASE("log levels parse") {
  log::Level level;
  CHECK(log::ParseLevel("warn", &level));
  CHECK(level == log::Level::kWarning);
  CHECK_FALSE(log::ParseLevel("loud", &level));
}

}  // namespace
}  // namespace distilld
