// A floor under the free space of the filesystem that holds the state
// directory: writes that would eat into it are refused, with a message that
// says so, before they reach RocksDB or a model file.
//
// Why a floor rather than riding ENOSPC: RocksDB 7.8 (Debian 12) on a full
// disk is not safe to keep writing to. Once, the first ingest batch that hit
// ENOSPC aborted the daemon in an assertion of its WAL writer
// (WritableFileWriter::AssertFalseAndGetStatusForPrevError); in
// bench/reliability/full_disk.py the write failed cleanly but the daemon could
// not be restarted on that disk, because opening the store replays the WAL
// into a new SST file and there was no room for it. With the floor both
// runs stop writing with room to spare for RocksDB's flushes, compactions and
// recovery. Serving needs no disk at all, so it goes on.
//
// Thread-safety: thread-safe (the floor is atomic; the probe must be too).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"

namespace distilld::storage {

// Bytes an unprivileged writer may still use on the filesystem of `path`
// (statvfs f_bavail * f_frsize); IoError naming the path if it fails.
Result<uint64_t> FreeBytesAt(const std::string& path);

class FreeSpaceFloor {
 public:
  // `probe` reports the free bytes (tests pass a fake); empty: FreeBytesAt(path).
  // min_free_bytes 0 turns the check off.
  FreeSpaceFloor(std::string path, uint64_t min_free_bytes, std::function<Result<uint64_t>()> probe = {});

  // Ok if `bytes` more can be written and min_free_bytes still stay free;
  // ResourceExhausted naming the directory, the free space and the floor
  // otherwise. One statvfs per call (about a microsecond).
  Status Check(uint64_t bytes = 0) const;
  Result<uint64_t> FreeBytes() const;

  void set_min_free_bytes(uint64_t bytes) { min_free_bytes_.store(bytes); }
  uint64_t min_free_bytes() const { return min_free_bytes_.load(); }

 private:
  std::string path_;
  std::atomic<uint64_t> min_free_bytes_;
  std::function<Result<uint64_t>()> probe_;
};

}  // namespace distilld::storage
