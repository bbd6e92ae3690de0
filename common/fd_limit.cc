#include "common/fd_limit.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace distilld {

Result<uint64_t> RaiseFdLimit(uint64_t want) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return Status::IoError(std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno));
  }
  if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur >= want) return static_cast<uint64_t>(lim.rlim_cur);
  const rlim_t target = lim.rlim_max == RLIM_INFINITY ? want : std::min<rlim_t>(want, lim.rlim_max);
  if (target <= lim.rlim_cur) return static_cast<uint64_t>(lim.rlim_cur);
  lim.rlim_cur = target;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return Status::IoError(std::string("setrlimit(RLIMIT_NOFILE): ") + std::strerror(errno));
  }
  return static_cast<uint64_t>(target);
}

}  // namespace distilld
