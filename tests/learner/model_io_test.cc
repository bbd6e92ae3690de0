#include "tests/learner/torch_doctest.h"

#include <fstream>

#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

torch::Tensor Forward(torch::jit::Module& m, const torch::Tensor& x) {
  torch::NoGradGuard g;
  return m.forward({x}).toTensor();
}

ArchSpec TinyCnn() {
  ArchSpec s;
  s.kind = "cnn";
  s.input_shape = {1, 8, 8};
  s.channels = {4, 8};
  s.hidden = {16};
  s.classes = 3;
  return s;
}

TEST_CASE("built-in MLP and CNN save and reload with identical outputs") {
  testing::TempDir dir;
  for (const ArchSpec& spec : {ArchSpec{"mlp", {1, 4, 4}, 3, {8, 6}, {}}, TinyCnn()}) {
    CAPTURE(spec.kind);
    auto built = BuildModel(spec, 7);
    REQUIRE(built.ok());
    torch::Tensor x = torch::rand({5, 1, spec.input_shape[1], spec.input_shape[2]});
    torch::Tensor y = Forward(*built, x);
    CHECK(y.size(0) == 5);
    CHECK(y.size(1) == 3);
    torch::Tensor f = built->get_method("features")({x}).toTensor();
    CHECK(f.size(0) == 5);
    CHECK(f.size(1) == (spec.kind == "mlp" ? 6 : 16));

    auto saved = SaveModelAtomic(*built, dir.str(spec.kind + ".pt"));
    REQUIRE(saved.ok());
    CHECK(saved->sha256.size() == 64);
    CHECK(saved->size_bytes == static_cast<int64_t>(std::filesystem::file_size(saved->path)));
    auto digest = Sha256File(saved->path);
    REQUIRE(digest.ok());
    CHECK(*digest == saved->sha256);

    auto loaded = LoadModel(saved->path, saved->sha256);
    REQUIRE(loaded.ok());
    CHECK(torch::equal(Forward(*loaded, x), y));
  }
  // Only the final files remain: no temp files left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  CHECK(files == 2);
}

TEST_CASE("same seed builds the same weights, a different seed different ones") {
  ArchSpec spec{"mlp", {1, 4, 4}, 3, {8}, {}};
  auto a = BuildModel(spec, 1), b = BuildModel(spec, 1), c = BuildModel(spec, 2);
  REQUIRE((a.ok() && b.ok() && c.ok()));
  torch::Tensor x = torch::rand({2, 1, 4, 4});
  CHECK(torch::equal(Forward(*a, x), Forward(*b, x)));
  CHECK_FALSE(torch::equal(Forward(*a, x), Forward(*c, x)));
}

TEST_CASE("a corrupted model file is rejected by its checksum") {
  testing::TempDir dir;
  auto m = BuildModel(ArchSpec{"mlp", {1, 4, 4}, 3, {8}, {}}, 1);
  REQUIRE(m.ok());
  auto saved = SaveModelAtomic(*m, dir.str("v.pt"));
  REQUIRE(saved.ok());
  {
    std::fstream f(saved->path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(saved->size_bytes / 2);
    char c = 0;
    f.read(&c, 1);
    f.seekp(saved->size_bytes / 2);
    c = static_cast<char>(c ^ 0x5a);
    f.write(&c, 1);
  }
  auto loaded = LoadModel(saved->path, saved->sha256);
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kCorruption);
  CHECK(loaded.status().message().find("SHA-256") != std::string::npos);
}

TEST_CASE("a garbage file is an error, not a crash") {
  testing::TempDir dir;
  std::string path = dir.str("garbage.pt");
  {
    std::ofstream f(path, std::ios::binary);
    f << "this is not a zip archive";
  }
  auto loaded = LoadModel(path);
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kInvalidArgument);
  CHECK(loaded.status().message().find(path) != std::string::npos);

  auto missing = LoadModel(dir.str("absent.pt"));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kIoError);
  CHECK_FALSE(Sha256File(dir.str("absent.pt")).ok());
}

TEST_CASE("unknown architecture or bad sizes are InvalidArgument") {
  ArchSpec spec;
  spec.kind = "transformer";
  auto r = BuildModel(spec, 1);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  ArchSpec bad;
  bad.hidden = {0};
  CHECK(BuildModel(bad, 1).status().code() == StatusCode::kInvalidArgument);
  ArchSpec deep = TinyCnn();
  deep.channels = {2, 2, 2, 2, 2};
  CHECK(BuildModel(deep, 1).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Sha256File matches a known digest") {
  testing::TempDir dir;
  std::string path = dir.str("abc");
  {
    std::ofstream f(path, std::ios::binary);
    f << "abc";
  }
  auto d = Sha256File(path);
  REQUIRE(d.ok());
  CHECK(*d == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("CheckSignature: the right shape passes; other inputs, class counts and NaN weights say what they did") {
  ArchSpec arch;
  arch.kind = "mlp";
  arch.input_shape = {1, 4, 4};
  arch.classes = 3;
  arch.hidden = {8};
  auto m = BuildModel(arch, 1);
  REQUIRE(m.ok());
  CHECK(CheckSignature(*m, {1, 4, 4}, 3).ok());
  Status classes = CheckSignature(*m, {1, 4, 4}, 10);
  CHECK(classes.code() == StatusCode::kInvalidArgument);
  CHECK(classes.message().find("returns [2, 3], expected [2, 10] (model.classes 10)") != std::string::npos);
  Status input = CheckSignature(*m, {1, 5, 5}, 3);
  CHECK(input.code() == StatusCode::kInvalidArgument);
  INFO(input.message());
  CHECK(input.message().find("forward() on input [2, 1, 5, 5] (model.input_shape) fails") != std::string::npos);
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : m->parameters()) p.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  CHECK(CheckSignature(*m, {1, 4, 4}, 3).message().find("non-finite") != std::string::npos);
}

}  // namespace
}  // namespace distilld::learner
