#include "daemon/http/auth.h"

#include <sys/stat.h>

#include <fstream>

namespace distilld::daemon {

Result<std::unique_ptr<Authorizer>> Authorizer::FromTokenFile(const std::string& path) {
  if (path.empty()) return std::unique_ptr<Authorizer>(new Authorizer(""));
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::FailedPrecondition("server.auth_token_file " + path + ": cannot stat the file");
  }
  if ((st.st_mode & 0007) != 0) {
    return Status::FailedPrecondition("server.auth_token_file " + path +
                                      ": the file is accessible by others (mode " +
                                      std::to_string((st.st_mode >> 6) & 7) +
                                      std::to_string((st.st_mode >> 3) & 7) +
                                      std::to_string(st.st_mode & 7) + "); chmod o-rwx it");
  }
  std::ifstream in(path);
  std::string token;
  if (!in || !std::getline(in, token)) {
    return Status::FailedPrecondition("server.auth_token_file " + path + ": cannot read a token");
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) {
    token.pop_back();
  }
  size_t start = token.find_first_not_of(" \t");
  token = start == std::string::npos ? "" : token.substr(start);
  if (token.empty()) {
    return Status::FailedPrecondition("server.auth_token_file " + path + ": the token is empty");
  }
  return std::unique_ptr<Authorizer>(new Authorizer(std::move(token)));
}

bool Authorizer::Allows(std::string_view header) const {
  if (token_.empty()) return true;
  constexpr std::string_view kPrefix = "Bearer ";
  if (header.size() < kPrefix.size() || header.substr(0, kPrefix.size()) != kPrefix) return false;
  std::string_view given = header.substr(kPrefix.size());
  // Constant time in the token's content: every byte is compared, and the
  // length difference is folded into the same accumulator.
  unsigned char diff = given.size() == token_.size() ? 0 : 1;
  for (size_t i = 0; i < token_.size(); ++i) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(token_[i]));
  }
  return diff == 0;
}

}  // namespace distilld::daemon
