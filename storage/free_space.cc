// See free_space.h.
#include "storage/free_space.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace distilld::storage {

Result<uint64_t> FreeBytesAt(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) {
    return Status::IoError("statvfs " + path + ": " + std::strerror(errno));
  }
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

FreeSpaceFloor::FreeSpaceFloor(std::string path, uint64_t min_free_bytes, std::function<Result<uint64_t>()> probe)
    : path_(std::move(path)), min_free_bytes_(min_free_bytes), probe_(std::move(probe)) {}

Result<uint64_t> FreeSpaceFloor::FreeBytes() const { return probe_ ? probe_() : FreeBytesAt(path_); }

Status FreeSpaceFloor::Check(uint64_t bytes) const {
  const uint64_t floor = min_free_bytes_.load();
  if (floor == 0) return Status::Ok();
  ASSIGN_OR_RETURN(uint64_t free, FreeBytes());
  if (free >= floor && free - floor >= bytes) return Status::Ok();
  auto mib = [](uint64_t b) { return b >= (1u << 20) ? std::to_string(b >> 20) + " MiB" : std::to_string(b >> 10) + " KiB"; };
  return Status::ResourceExhausted("disk nearly full: " + path_ + " has " + mib(free) + " free, " +
                                   (bytes > 0 ? "needs " + mib(bytes) + " more, " : std::string()) +
                                   "and storage.min_free_mb keeps " + mib(floor) +
                                   " free; writes are refused until space is freed");
}

}  // namespace distilld::storage
