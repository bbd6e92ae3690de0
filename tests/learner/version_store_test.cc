// VersionStore over the in-memory registry fake (whose contract the SQLite
// registry also passes) and real files in a temp dir.
#include "learner/version_store.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "learner/model/model_io.h"
#include "tests/support/fake_registry.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

ArchSpec Tiny() { return ArchSpec{"mlp", {1, 2, 2}, 3, {4}, {}}; }

struct Env {
  testing::TempDir dir;
  std::unique_ptr<storage::Registry> registry = testing::NewFakeRegistry();
  std::unique_ptr<VersionStore> versions;
  Env() {
    auto v = VersionStore::Create({dir.str("state"), registry.get()});
    REQUIRE_MESSAGE(v.ok(), v.status().ToString());
    versions = std::move(v).value();
  }
  std::filesystem::path File(const std::string& rel) const { return std::filesystem::path(dir.str("state")) / rel; }
};

void FlipLastByte(const std::filesystem::path& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f);
  f.seekg(-1, std::ios::end);
  char c = 0;
  f.read(&c, 1);
  f.seekp(-1, std::ios::end);
  c = static_cast<char>(c ^ 0x01);
  f.write(&c, 1);
}

TEST_CASE("version names and paths") {
  CHECK(VersionStore::Name(12) == "v000012");
  CHECK(VersionStore::RelativePath(12) == "models/v000012.pt");
  CHECK(VersionStore::Create({"", nullptr}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("the first start saves, registers, activates and records the initial student; later starts reuse it") {
  Env env;
  InitialStudentOptions o;
  o.arch = Tiny();
  auto first = env.versions->LoadOrCreateInitial(o);
  REQUIRE_MESSAGE(first.ok(), first.status().ToString());
  CHECK(first->id == 1);
  CHECK(first->path == "models/v000001.pt");
  CHECK(first->status == storage::VersionStatus::kActive);
  CHECK(first->metrics.label_space == std::set<int64_t>{});
  CHECK_FALSE(first->metrics.evaluation.has_value());
  CHECK(first->sha256 == *Sha256File(env.File(first->path).string()));
  CHECK(first->size_bytes == static_cast<int64_t>(std::filesystem::file_size(env.File(first->path))));
  auto events = env.registry->ListEvents(10);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 1);
  CHECK((*events)[0].kind == storage::EventKind::kSwap);

  o.arch.kind = "unused-when-a-version-is-active";
  auto again = env.versions->LoadOrCreateInitial(o);
  REQUIRE(again.ok());
  CHECK(again->id == 1);
  CHECK(env.registry->ListVersions()->size() == 1);
}

TEST_CASE("a damaged active file is refused at start, naming the version") {
  Env env;
  InitialStudentOptions o;
  o.arch = Tiny();
  auto first = env.versions->LoadOrCreateInitial(o);
  REQUIRE(first.ok());
  FlipLastByte(env.File(first->path));
  auto again = env.versions->LoadOrCreateInitial(o);
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().code() == StatusCode::kCorruption);
  CHECK(again.status().message().find("version 1") != std::string::npos);
}

TEST_CASE("Add takes the next id, names the file after it and replaces a file a crash left without a row") {
  Env env;
  auto model = BuildModel(Tiny(), 1);
  REQUIRE(model.ok());
  storage::VersionRecord r;
  r.note = "first";
  auto v1 = env.versions->Add(*model, r);
  REQUIRE(v1.ok());
  CHECK(v1->id == 1);
  // A crash after the file was written and before the row: a stray v000002.pt.
  std::ofstream(env.File("models/v000002.pt")) << "not a model";
  r.note = "second";
  r.parent = 1;
  auto v2 = env.versions->Add(*model, r);
  REQUIRE_MESSAGE(v2.ok(), v2.status().ToString());
  CHECK(v2->id == 2);
  CHECK(v2->path == "models/v000002.pt");
  CHECK(v2->parent == 1);
  CHECK(v2->note == "second");
  auto loaded = env.versions->Load(*v2);
  CHECK_MESSAGE(loaded.ok(), loaded.status().ToString());
  // An active record cannot be added (the registry refuses it).
  r.status = storage::VersionStatus::kActive;
  CHECK(env.versions->Add(*model, r).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("a user's student file: its label space is left to be inferred") {
  Env env;
  auto model = BuildModel(Tiny(), 2);
  REQUIRE(model.ok());
  REQUIRE(SaveModelAtomic(*model, env.dir.str("user.pt")).ok());
  InitialStudentOptions o;
  o.student_path = env.dir.str("user.pt");
  o.arch = Tiny();  // the input shape and classes its signature is checked against
  auto v = env.versions->LoadOrCreateInitial(o);
  REQUIRE_MESSAGE(v.ok(), v.status().ToString());
  CHECK(v->metrics == storage::VersionMetrics{});  // distilld knows nothing of its training
  CHECK(v->note == "initial student from " + env.dir.str("user.pt"));
  o.student_path = env.dir.str("missing.pt");
  Env other;
  CHECK_FALSE(other.versions->LoadOrCreateInitial(o).ok());
  CHECK(other.registry->ListVersions()->empty());
}

}  // namespace
}  // namespace distilld::learner
