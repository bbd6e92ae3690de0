// The gate inside real rounds: class-incremental phases, label spaces of
// unlabelled rounds and of students from files.
#include "tests/learner/distiller_fixture.h"

namespace distilld::learner {
namespace {

using namespace distiller_test;  // the fixture and its helpers

// A gate check's verdict from a round's evaluation JSON ("name" and, for
// per-class checks, "class").
std::optional<bool> CheckPassed(const std::string& json, const std::string& name, std::optional<int64_t> cls = {}) {
  std::string key = "{\"name\":\"" + name + "\"";
  if (cls) key += ",\"class\":" + std::to_string(*cls);
  key += ",";
  size_t at = json.find(key);
  if (at == std::string::npos) return std::nullopt;
  size_t pass = json.find("\"pass\":", at);
  REQUIRE(pass != std::string::npos);
  return json.compare(pass + 7, 4, "true") == 0;
}

TEST_CASE("class-incremental rounds under the default gate: new classes with replay are promoted, without replay rejected") {
  // Phase 1: classes 0 and 1; phase 2: class 2 alone. The default gate
  // (no overrides) judges the second candidate among the first version's
  // classes {0, 1}, where it keeps telling them apart.
  for (bool replay : {true, false}) {
    CAPTURE(replay);
    Fixture f;
    DistillerOptions o = f.Options();
    if (!replay) o.replay.replay_ratio = 0;
    auto d = IncrementalDistiller::Create(o);
    REQUIRE(d.ok());
    f.Append(BlobsOf(300, 11, {0, 1}));
    auto first = (*d)->RunRoundNow("test");
    REQUIRE(first.ok());
    INFO(first->eval_json);
    REQUIRE(first->outcome == storage::RoundOutcome::kPromoted);
    // The built-in initial student knew nothing: both classes were new.
    CHECK(first->eval_json.find("\"active_label_space\":[],\"active_label_space_source\":\"recorded\"") !=
          std::string::npos);
    CHECK(first->eval_json.find("\"label_space\":[0,1]") != std::string::npos);
    CHECK(CheckPassed(first->eval_json, "new_classes_learned") == true);

    f.Append(BlobsOf(200, 12, {2}));
    auto second = (*d)->RunRoundNow("test");
    REQUIRE(second.ok());
    INFO(second->eval_json, " ", second->reason);
    CHECK(second->eval_json.find("\"active_label_space\":[0,1]") != std::string::npos);
    if (replay) {
      CHECK(second->outcome == storage::RoundOutcome::kPromoted);
      CHECK(CheckPassed(second->eval_json, "old_class_accuracy", 0) == true);
      CHECK(CheckPassed(second->eval_json, "old_class_retention", 1) == true);
      CHECK(CheckPassed(second->eval_json, "new_classes_learned") == true);
      CHECK(second->eval_json.find("\"label_space\":[0,1,2]") != std::string::npos);
      // The promoted version carries its label space for the next round.
      auto v = f.registry->GetVersion(*second->candidate_version);
      REQUIRE(v.ok());
      CHECK(v->metrics_json.find("\"label_space\":[0,1,2]") != std::string::npos);
    } else {
      // Trained on class 2 alone, it predicts 2 for everything.
      CHECK(second->outcome == storage::RoundOutcome::kRejected);
      CHECK(CheckPassed(second->eval_json, "old_class_retention", 0) == false);
      CHECK(second->reason.find("class 0 accuracy") != std::string::npos);
      CHECK(f.ActiveId() == *first->candidate_version);
    }
  }
}

TEST_CASE("unlabelled samples do not widen a version's label space") {
  Fixture f;
  auto d = IncrementalDistiller::Create(f.Options());
  REQUIRE(d.ok());
  f.Append(BlobsOf(300, 41, {0, 1}));
  auto first = (*d)->RunRoundNow("test");
  REQUIRE(first.ok());
  REQUIRE(first->outcome == storage::RoundOutcome::kPromoted);
  // Class 2 arrives without labels: the teacher's logits train the
  // candidate on it, but the candidate's label space stays {0, 1}.
  auto unlabelled = BlobsOf(200, 42, {2});
  for (auto& s : unlabelled) s.label.reset();
  f.Append(unlabelled);
  auto second = (*d)->RunRoundNow("test");
  REQUIRE(second.ok());
  INFO(second->eval_json);
  CHECK(second->eval_json.find("\"label_space\":[0,1],") != std::string::npos);
}

TEST_CASE("a student from a file has its label space inferred from what it classifies on the held-out set") {
  // Trained on classes 0 and 1 only, then saved: distilld knows nothing of
  // its history.
  testing::TempDir files;
  std::string path;
  {
    Fixture trainer;
    trainer.Append(BlobsOf(300, 21, {0, 1}));
    auto d = IncrementalDistiller::Create(trainer.Options());
    REQUIRE(d.ok());
    auto r = (*d)->RunRoundNow("test");
    REQUIRE(r.ok());
    REQUIRE(r->outcome == storage::RoundOutcome::kPromoted);
    auto v = trainer.registry->GetVersion(*r->candidate_version);
    REQUIRE(v.ok());
    auto m = trainer.versions->Load(*v);
    REQUIRE(m.ok());
    auto saved = SaveModelAtomic(*m, files.str("user.pt"));
    REQUIRE(saved.ok());
    path = saved->path;
  }
  Fixture f(path);
  CHECK(f.initial.metrics_json == "{}");
  f.Append(BlobsOf(400, 22, {0, 1, 2}));
  auto d = IncrementalDistiller::Create(f.Options());
  REQUIRE(d.ok());
  auto r = (*d)->RunRoundNow("test");
  REQUIRE(r.ok());
  INFO(r->eval_json);
  CHECK(r->eval_json.find("\"active_label_space\":[0,1],\"active_label_space_source\":\"inferred\"") !=
        std::string::npos);
  CHECK(r->outcome == storage::RoundOutcome::kPromoted);
}

}  // namespace
}  // namespace distilld::learner
