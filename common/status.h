// Status and Result<T>: the error type at every component boundary.
//
// Exceptions from third-party libraries (c10::Error, std::exception from
// yaml-cpp, rocksdb::Status, SQLite codes, boost::system::error_code) are
// converted to a Status at the edge of the component that calls them; no
// exception crosses a component API. Both types are cheap value types and are
// thread-compatible (no internal synchronisation).
#pragma once

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace distilld {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller's input is wrong (HTTP 400)
  kNotFound,            // no such thing (HTTP 404)
  kAlreadyExists,       // (HTTP 409)
  kFailedPrecondition,  // not in a state to do this now (HTTP 409)
  kUnavailable,         // try again later: overloaded, not ready (HTTP 503)
  kResourceExhausted,   // a configured limit was hit (HTTP 413/503)
  kUnauthenticated,     // (HTTP 401)
  kCorruption,          // stored data is unreadable
  kIoError,             // the OS or a library failed to read/write
  kAborted,             // given up on purpose (a diverging NaN loss)
  kCancelled,           // stopped because the caller asked (Stop(), a cancel flag, shutdown)
  kInternal,            // a bug or an unexpected library error
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status Unauthenticated(std::string m) {
    return {StatusCode::kUnauthenticated, std::move(m)};
  }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
  static Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;
  // Returns a copy with "context: " prepended to the message.
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Either a value or a non-OK Status. Accessing value() of an error aborts:
// that is a bug in the caller, not a runtime condition.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(v_).ok()) Die("Result constructed from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    if (!ok()) Die(std::get<Status>(v_).ToString());
    return std::get<T>(v_);
  }
  const T& value() const& {
    if (!ok()) Die(std::get<Status>(v_).ToString());
    return std::get<T>(v_);
  }
  T&& value() && {
    if (!ok()) Die(std::get<Status>(v_).ToString());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  [[noreturn]] static void Die(const std::string& why) {
    std::cerr << "<2>fatal: Result::value() on error: " << why << std::endl;
    std::abort();
  }
  std::variant<T, Status> v_;
};

}  // namespace distilld

#define DISTILLD_CONCAT_INNER(a, b) a##b
#define DISTILLD_CONCAT(a, b) DISTILLD_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if it is not OK.
#define RETURN_IF_ERROR(expr)                         \
  do {                                                \
    ::distilld::Status _st = (expr);                  \
    if (!_st.ok()) return _st;                        \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares x or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr)                                       \
  auto DISTILLD_CONCAT(_res_, __LINE__) = (expr);                         \
  if (!DISTILLD_CONCAT(_res_, __LINE__).ok())                             \
    return DISTILLD_CONCAT(_res_, __LINE__).status();                     \
  lhs = std::move(DISTILLD_CONCAT(_res_, __LINE__)).value()
