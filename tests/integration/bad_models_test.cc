// Bad model files as a user may hand them over, or a disk may leave them:
// truncated, bit-flipped, the wrong input shape or class count, as the
// initial student, as the teacher, or as a stored version. A bad student
// refuses start-up with a message naming the file; a bad teacher leaves the
// daemon serving with the learner off, saying why; a bad stored version is
// never served. The daemon never crashes and never serves a bad file.
#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "learner/model/arch.h"
#include "tests/integration/learning_env.h"

namespace distilld::testing {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A model of the right file format but the wrong signature.
void SaveMlp(const std::vector<int64_t>& input_shape, int64_t classes, const std::string& path) {
  learner::ArchSpec arch;
  arch.input_shape = input_shape;
  arch.classes = classes;
  arch.hidden = {8};
  auto m = learner::BuildModel(arch, 3);
  REQUIRE(m.ok());
  REQUIRE(learner::SaveModelAtomic(*m, path).ok());
}

// The variants, each written over `path` from the good file `good`.
enum class Damage { kTruncated, kEmpty, kNotAModel, kWrongClasses, kWrongInput };

void Damaged(const std::string& good, const std::string& path, Damage d) {
  const std::string bytes = ReadAll(good);
  switch (d) {
    case Damage::kTruncated: WriteAll(path, bytes.substr(0, bytes.size() / 2)); break;
    case Damage::kEmpty: WriteAll(path, ""); break;
    case Damage::kNotAModel: WriteAll(path, "this is not a TorchScript archive\n"); break;
    case Damage::kWrongClasses: SaveMlp({1, 4, 4}, kTaskClasses + 2, path); break;
    case Damage::kWrongInput: SaveMlp({1, 5, 5}, kTaskClasses, path); break;
  }
}

const char* Name(Damage d) {
  switch (d) {
    case Damage::kTruncated: return "truncated";
    case Damage::kEmpty: return "empty";
    case Damage::kNotAModel: return "not a model";
    case Damage::kWrongClasses: return "wrong class count";
    case Damage::kWrongInput: return "wrong input shape";
  }
  return "";
}

constexpr Damage kAll[] = {Damage::kTruncated, Damage::kEmpty, Damage::kNotAModel, Damage::kWrongClasses,
                           Damage::kWrongInput};

TEST_CASE("a bad initial student refuses start-up naming the file, and registers nothing") {
  TempDir dir;
  SyntheticTask task;
  TrainAndSave(task, {0, 1, 2}, dir.str("teacher.pt"), 1);
  TrainAndSave(task, {0, 1}, dir.str("student.pt"), 2);
  for (Damage d : kAll) {
    CAPTURE(Name(d));
    const std::string bad = dir.str("bad_student.pt");
    Damaged(dir.str("student.pt"), bad, d);
    config::Config c = LearningConfig(dir);
    c.storage.state_dir = dir.str("state_student_" + std::to_string(static_cast<int>(d)));
    c.model.student = bad;
    auto daemon = daemon::Daemon::Create(c);
    Status st = daemon->Start();
    INFO(st.ToString());
    CHECK_FALSE(st.ok());
    CHECK(st.message().find("model.student") != std::string::npos);
    CHECK(st.message().find(bad) != std::string::npos);
    daemon.reset();
    // The user fixes the file and starts again on the same state dir: the
    // good model is used, no bad version was registered before it.
    c.model.student = dir.str("student.pt");
    auto fixed = daemon::Daemon::Create(c);
    Status ok = fixed->Start();
    INFO(ok.ToString());
    REQUIRE(ok.ok());
    auto versions = fixed->registry()->ListVersions();
    REQUIRE(versions.ok());
    CHECK(versions->size() == 1);
    TcpClient client(Loopback(fixed->tcp_port()));
    const float x[kTaskPixels] = {};
    CHECK(client.Post("/v2/models/fashion/infer", Infer4x4(x, "fixed")).status == 200);
  }
}

TEST_CASE("a bad or missing teacher disables the learner with the reason; serving goes on") {
  TempDir dir;
  SyntheticTask task;
  TrainAndSave(task, {0, 1, 2}, dir.str("teacher.pt"), 1);
  TrainAndSave(task, {0, 1}, dir.str("student.pt"), 2);
  std::vector<std::pair<std::string, std::string>> cases;  // name, what the reason must say
  for (Damage d : kAll) cases.emplace_back(Name(d), "model.teacher");
  cases.emplace_back("missing", "no such file");
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [name, says] = cases[i];
    CAPTURE(name);
    const std::string bad = dir.str("bad_teacher_" + std::to_string(i) + ".pt");
    if (i < std::size(kAll)) Damaged(dir.str("teacher.pt"), bad, kAll[i]);
    config::Config c = LearningConfig(dir);
    c.storage.state_dir = dir.str("state_teacher_" + std::to_string(i));
    c.model.teacher = bad;
    auto daemon = daemon::Daemon::Create(c);
    Status st = daemon->Start();
    INFO(st.ToString());
    REQUIRE(st.ok());
    TcpClient client(Loopback(daemon->tcp_port()));
    const float x[kTaskPixels] = {};
    CHECK(client.Post("/v2/models/fashion/infer", Infer4x4(x, "served")).status == 200);
    CHECK(client.Get("/v2/health/ready").status == 200);
    Reply l = client.Get("/v1/learner");
    REQUIRE(l.status == 200);
    rapidjson::Document ld = Parse(l.body);
    CHECK_FALSE(ld["enabled"].GetBool());
    const std::string reason = ld["disabled_reason"].GetString();
    CHECK(reason.find(says) != std::string::npos);
    CHECK(reason.find(bad) != std::string::npos);
    // Samples are still stored; a round is refused with the same reason.
    std::mt19937_64 rng(4);
    std::vector<float> xs;
    std::vector<int64_t> ys;
    task.Make(30, -1, rng, &xs, &ys);
    CHECK(client.Post("/v1/samples", SamplesJson(xs, ys)).status == 200);
    Reply round = client.Post("/v1/learner/rounds", "{}");
    CHECK(round.status == 409);
    CHECK(round.body.find(reason.substr(0, 40)) != std::string::npos);
    Reply events = client.Get("/v1/events?limit=10");
    CHECK(events.body.find("learner disabled") != std::string::npos);
  }
}

TEST_CASE("a stored version whose file was damaged is never served") {
  Env env;
  TcpClient c = env.Client();
  // A second version to go to, from a round.
  std::mt19937_64 rng(3);
  std::vector<float> x;
  std::vector<int64_t> y;
  env.task.Make(90, -1, rng, &x, &y);
  rapidjson::Document r = PostSamplesAndRound(c, SamplesJson(x, y));
  REQUIRE(std::string(r["outcome"].GetString()) == "promoted");
  const int64_t v2 = r["candidate_version"].GetInt64();

  // Version 1's file gets a flipped byte: activating it is refused by its
  // checksum, and version 2 keeps serving.
  auto v1 = env.daemon->registry()->GetVersion(1);
  REQUIRE(v1.ok());
  const std::string file = (fs::path(env.config.storage.state_dir) / v1->path).string();
  const std::string original_v1 = ReadAll(file);
  std::string bytes = original_v1;
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
  WriteAll(file, bytes);
  Reply refused = c.Post("/v1/models/fashion/versions/1/activate", "{}");
  CHECK(refused.status >= 400);
  CHECK(refused.body.find("SHA-256") != std::string::npos);
  const float zero[kTaskPixels] = {};
  Reply served = c.Post("/v2/models/fashion/infer", Infer4x4(zero, "after"));
  REQUIRE(served.status == 200);
  CHECK(std::string(Parse(served.body)["model_version"].GetString()) == std::to_string(v2));
  CHECK(env.daemon->registry()->ActiveVersion().value()->id == v2);

  // The active version's file is damaged while the daemon is down: the next
  // start serves the newest version that verifies, and says so.
  const config::Config cfg = env.config;
  env.daemon.reset();
  std::string v2_file;
  {
    auto reg = storage::Registry::Open({(fs::path(cfg.storage.state_dir) / "registry.sqlite").string()});
    REQUIRE(reg.ok());
    v2_file = (fs::path(cfg.storage.state_dir) / (*reg)->GetVersion(v2)->path).string();
  }
  const std::string original_v2 = ReadAll(v2_file);
  WriteAll(v2_file, original_v2.substr(0, original_v2.size() - 100));
  WriteAll(file, original_v1);  // version 1 is intact again
  {
    auto restarted = daemon::Daemon::Create(cfg);
    Status st = restarted->Start();
    INFO(st.ToString());
    REQUIRE(st.ok());
    CHECK(restarted->registry()->ActiveVersion().value()->id == 1);
    auto events = restarted->registry()->ListEvents(5);
    REQUIRE(events.ok());
    bool said = false;
    for (const auto& e : *events) said = said || e.message.find("version " + std::to_string(v2)) != std::string::npos;
    CHECK(said);
    TcpClient rc(Loopback(restarted->tcp_port()));
    Reply again = rc.Post("/v2/models/fashion/infer", Infer4x4(zero, "fallback"));
    REQUIRE(again.status == 200);
    CHECK(std::string(Parse(again.body)["model_version"].GetString()) == "1");
  }
  // No version verifies: start-up fails, naming the damage.
  WriteAll(file, bytes);
  auto broken = daemon::Daemon::Create(cfg);
  Status st = broken->Start();
  INFO(st.ToString());
  CHECK_FALSE(st.ok());
  CHECK(st.message().find("SHA-256") != std::string::npos);
}

}  // namespace
}  // namespace distilld::testing
