// Version-file retention over the real SQLite registry and real files in a
// temp dir (no LibTorch: a version file here is a few bytes).
#include "learner/version_retention.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "learner/version_names.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

namespace fs = std::filesystem;
using storage::VersionStatus;

struct Env {
  testing::TempDir dir;
  std::string state = dir.str("state");
  std::unique_ptr<storage::Registry> registry;
  Env() {
    fs::create_directories(fs::path(state) / "models");
    storage::RegistryOptions o;
    o.path = dir.str("registry.sqlite");
    auto r = storage::Registry::Open(o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    registry = std::move(r).value();
  }
  fs::path File(int64_t id) const { return fs::path(state) / VersionRelativePath(id); }
  void Touch(const fs::path& p) const { std::ofstream(p) << "model bytes"; }
  // Versions 1..n, each with a file; `served` were activated in order (the
  // last of them stays active), `candidates` stay candidates, the rest rejected.
  void Make(int n, const std::vector<int64_t>& served, const std::set<int64_t>& candidates) {
    for (int64_t id = 1; id <= n; ++id) {
      storage::VersionRecord r;
      r.id = id;
      r.path = VersionRelativePath(id);
      r.sha256 = "00";
      r.size_bytes = 100 + id;
      REQUIRE(registry->AddVersion(r).ok());
      Touch(File(id));
    }
    for (int64_t id : served) REQUIRE(registry->Activate(id).ok());
    std::set<int64_t> served_set(served.begin(), served.end());
    for (int64_t id = 1; id <= n; ++id) {
      if (served_set.count(id) == 0 && candidates.count(id) == 0) {
        REQUIRE(registry->SetVersionStatus(id, VersionStatus::kRejected, "gate").ok());
      }
    }
  }
  std::set<int64_t> WithFiles(int n) const {
    std::set<int64_t> out;
    for (int64_t id = 1; id <= n; ++id) {
      if (fs::exists(File(id))) out.insert(id);
    }
    return out;
  }
  std::set<int64_t> MarkedRemoved() const {
    std::set<int64_t> out;
    auto versions = registry->ListVersions();
    REQUIRE(versions.ok());
    for (const auto& v : *versions) {
      if (v.file_removed_us) out.insert(v.id);
    }
    return out;
  }
};

TEST_CASE("version file names parse back to their id, and nothing else does") {
  CHECK(ParseVersionFileName(VersionName(12) + ".pt") == std::optional<int64_t>(12));
  CHECK(ParseVersionFileName("v1234567.pt") == std::optional<int64_t>(1234567));
  for (const char* bad : {"v12.pt", "v000000.pt", "v00001a.pt", "x000012.pt", "v000012.pth", "v000012", ".pt",
                          "v0000012.pt", ""}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseVersionFileName(bad).has_value());
  }
}

TEST_CASE("retention keeps the newest N, every served version, the active one and candidates") {
  Env env;
  // 1, 5, 10 and 25 were served in turn (25 is active); 30 is a candidate.
  env.Make(30, {1, 5, 10, 25}, {30});
  RetentionPolicy keep_served_all;
  keep_served_all.keep_last = 3;
  auto report = ApplyRetention(*env.registry, env.state, keep_served_all);
  REQUIRE_MESSAGE(report.ok(), report.status().ToString());
  const std::set<int64_t> kept = {1, 5, 10, 25, 28, 29, 30};
  CHECK(env.WithFiles(30) == kept);
  CHECK(report->removed.size() == 30 - kept.size());
  int64_t bytes = 0;
  for (int64_t id : report->removed) {
    CHECK(kept.count(id) == 0);
    bytes += 100 + id;
  }
  CHECK(report->bytes_freed == bytes);
  // The rows stay, marked; their versions cannot be served again.
  CHECK(env.registry->ListVersions()->size() == 30);
  CHECK(env.MarkedRemoved().size() == report->removed.size());
  CHECK(env.registry->Activate(2, /*allow_rejected=*/true).code() == StatusCode::kFailedPrecondition);
  CHECK((*env.registry->ActiveVersion())->id == 25);
  // A second pass finds nothing more to do.
  auto again = ApplyRetention(*env.registry, env.state, keep_served_all);
  REQUIRE(again.ok());
  CHECK(again->removed.empty());

  // Only the newest two served versions: 25 (active) and 10; 5 and 1 go.
  RetentionPolicy keep_served_two = keep_served_all;
  keep_served_two.keep_served = 2;
  auto tighter = ApplyRetention(*env.registry, env.state, keep_served_two);
  REQUIRE(tighter.ok());
  CHECK(tighter->removed == std::vector<int64_t>{1, 5});
  CHECK(env.WithFiles(30) == std::set<int64_t>{10, 25, 28, 29, 30});
  // keep_served 0 still keeps the active version.
  keep_served_two.keep_served = 0;
  keep_served_two.keep_last = 1;
  auto tightest = ApplyRetention(*env.registry, env.state, keep_served_two);
  REQUIRE(tightest.ok());
  CHECK(env.WithFiles(30) == std::set<int64_t>{25, 30});
}

TEST_CASE("retention records an event naming what it deleted, and refuses keep_last 0") {
  Env env;
  env.Make(5, {1}, {});
  RetentionPolicy p;
  p.keep_last = 2;
  auto report = ApplyRetentionAndRecord(*env.registry, env.state, p, "after round 7");
  REQUIRE(report.ok());
  CHECK(report->removed == std::vector<int64_t>{2, 3});
  auto events = env.registry->ListEvents(5);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 1);
  CHECK(events->front().kind == storage::EventKind::kRetention);
  CHECK(events->front().message.find("version(s) 2, 3 after round 7") != std::string::npos);
  // Nothing to delete: no event.
  REQUIRE(ApplyRetentionAndRecord(*env.registry, env.state, p, "at start").ok());
  CHECK(env.registry->ListEvents(5)->size() == 1);
  p.keep_last = 0;
  CHECK(ApplyRetention(*env.registry, env.state, p).status().code() == StatusCode::kInvalidArgument);
  // A file already gone (deleted by hand) counts as deleted.
  fs::remove(env.File(4));
  p.keep_last = 1;
  auto hand = ApplyRetention(*env.registry, env.state, p);
  REQUIRE(hand.ok());
  CHECK(hand->removed == std::vector<int64_t>{4});
  CHECK(env.WithFiles(5) == std::set<int64_t>{1, 5});
}

TEST_CASE("the start-up sweep deletes stray version files and temp files, nothing else") {
  Env env;
  env.Make(3, {1}, {3});
  REQUIRE(env.registry->MarkFileRemoved(2).ok());  // a crash before the unlink
  const fs::path models = fs::path(env.state) / "models";
  env.Touch(env.File(4));                           // saved, never registered
  env.Touch(models / ".v000004.pt.tmp.123.0");      // an interrupted save
  env.Touch(models / "notes.txt");                  // the user's
  env.Touch(models / ".hidden.tmp.1");              // not ours either
  auto removed = RemoveStrayVersionFiles(*env.registry, env.state);
  REQUIRE_MESSAGE(removed.ok(), removed.status().ToString());
  CHECK(*removed == 3);
  CHECK(env.WithFiles(4) == std::set<int64_t>{1, 3});
  CHECK_FALSE(fs::exists(models / ".v000004.pt.tmp.123.0"));
  CHECK(fs::exists(models / "notes.txt"));
  CHECK(fs::exists(models / ".hidden.tmp.1"));
  CHECK(*RemoveStrayVersionFiles(*env.registry, env.state) == 0);
  // A state dir without models/ yet is not an error.
  testing::TempDir empty;
  CHECK(*RemoveStrayVersionFiles(*env.registry, empty.str("none")) == 0);
}

}  // namespace
}  // namespace distilld::learner
