// The free-space floor: its arithmetic and message, statvfs on a real
// directory, and the sample store refusing writes below it.
#include "storage/free_space.h"

#include <doctest/doctest.h>

#include <atomic>
#include <vector>

#include "storage/sample_store.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_samples.h"

namespace distilld::storage {
namespace {

constexpr uint64_t kMiB = 1u << 20;

TEST_CASE("statvfs of a real directory reports its free space; a missing one is an IoError naming it") {
  testing::TempDir dir;
  Result<uint64_t> free = FreeBytesAt(dir.str());
  REQUIRE(free.ok());
  CHECK(*free > 0);
  Result<uint64_t> missing = FreeBytesAt(dir.str("no/such/dir"));
  CHECK(missing.status().code() == StatusCode::kIoError);
  CHECK(missing.status().message().find("no/such/dir") != std::string::npos);
}

TEST_CASE("the floor passes writes that leave it free and refuses the rest, saying why") {
  std::atomic<uint64_t> free{300 * kMiB};
  FreeSpaceFloor floor("/srv/distilld", 256 * kMiB, [&]() -> Result<uint64_t> { return free.load(); });
  CHECK(floor.Check().ok());
  CHECK(floor.Check(44 * kMiB).ok());  // exactly down to the floor
  Status over = floor.Check(45 * kMiB);
  CHECK(over.code() == StatusCode::kResourceExhausted);
  CHECK(over.message() ==
        "disk nearly full: /srv/distilld has 300 MiB free, needs 45 MiB more, and storage.min_free_mb keeps "
        "256 MiB free; writes are refused until space is freed");
  free = 100 * kMiB;
  CHECK(floor.Check().code() == StatusCode::kResourceExhausted);
  CHECK(floor.Check().message().find("has 100 MiB free, and storage.min_free_mb") != std::string::npos);
  CHECK(floor.Check(4096).message().find("needs 4 KiB more") != std::string::npos);
  // Lowered at run time (SIGHUP), or off.
  floor.set_min_free_bytes(64 * kMiB);
  CHECK(floor.Check(36 * kMiB).ok());
  floor.set_min_free_bytes(0);
  CHECK(floor.Check(1000 * kMiB).ok());
  CHECK(floor.min_free_bytes() == 0);
  // A probe that fails is an error, not a pass.
  FreeSpaceFloor broken("/x", kMiB, []() -> Result<uint64_t> { return Status::IoError("statvfs /x: gone"); });
  CHECK(broken.Check().code() == StatusCode::kIoError);
}

TEST_CASE("below the floor the sample store refuses appends, puts and applies, stores nothing, and recovers") {
  testing::TempDir dir;
  std::atomic<uint64_t> free{512 * kMiB};
  FreeSpaceFloor floor(dir.str(), 256 * kMiB, [&]() -> Result<uint64_t> { return free.load(); });
  SampleStoreOptions o;
  o.path = dir.str("db");
  o.free_space = &floor;
  auto opened = SampleStore::Open(o);
  REQUIRE(opened.ok());
  auto& store = *opened;
  std::vector<Sample> batch = {testing::MakeSample(1, 2), testing::MakeSample(2, 3)};
  auto first = store->AppendIncoming(batch);
  REQUIRE(first.ok());

  free = 200 * kMiB;
  auto refused = store->AppendIncoming(batch);
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("storage.min_free_mb") != std::string::npos);
  CHECK(store->PutIncoming(first->first, batch[1]).code() == StatusCode::kResourceExhausted);
  const Mutation m{Family::kState, "k", std::string("v")};
  CHECK(store->Apply(std::span<const Mutation>(&m, 1)).code() == StatusCode::kResourceExhausted);
  CHECK(store->IncomingCount() == 2);
  CHECK(store->ReadIncoming(0, 10)->size() == 2);
  CHECK(store->Get(Family::kState, "k")->has_value() == false);
  CHECK((*store->GetIncoming(first->first)) == batch[0]);  // reads go on

  free = 400 * kMiB;
  REQUIRE(store->AppendIncoming(batch).ok());
  CHECK(store->IncomingCount() == 4);
}

}  // namespace
}  // namespace distilld::storage
