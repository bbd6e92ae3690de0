// The gate inside real rounds: class-incremental phases, label spaces of
// unlabelled rounds and of students from files.
#include "tests/learner/distiller_fixture.h"

namespace distilld::learner {
namespace {

using namespace distiller_test;  // the fixture and its helpers

// A gate check's verdict in a round's evaluation (by name and, for
// per-class checks, class); nullopt when the gate did not run it.
std::optional<bool> CheckPassed(const storage::RoundRecord& r, const std::string& name,
                                std::optional<int64_t> cls = {}) {
  for (const storage::GateCheckResult& c : Eval(r).gate.checks) {
    if (c.name == name && c.cls == cls) return c.pass;
  }
  return std::nullopt;
}

using Classes = std::set<int64_t>;

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
    INFO(Shown(*first));
    REQUIRE(first->outcome == storage::RoundOutcome::kPromoted);
    // The built-in initial student knew nothing: both classes were new.
    CHECK(Eval(*first).active_label_space.empty());
    CHECK(Eval(*first).active_label_space_source == storage::LabelSpaceSource::kRecorded);
    CHECK(Eval(*first).label_space == Classes{0, 1});
    CHECK(CheckPassed(*first, "new_classes_learned") == true);

    f.Append(BlobsOf(200, 12, {2}));
    auto second = (*d)->RunRoundNow("test");
    REQUIRE(second.ok());
    INFO(Shown(*second), " ", second->reason);
    CHECK(Eval(*second).active_label_space == Classes{0, 1});
    if (replay) {
      CHECK(second->outcome == storage::RoundOutcome::kPromoted);
      CHECK(CheckPassed(*second, "old_class_accuracy", 0) == true);
      CHECK(CheckPassed(*second, "old_class_retention", 1) == true);
      CHECK(CheckPassed(*second, "new_classes_learned") == true);
      CHECK(Eval(*second).label_space == Classes{0, 1, 2});
      // The promoted version carries its label space for the next round.
      auto v = f.registry->GetVersion(*second->candidate_version);
      REQUIRE(v.ok());
      CHECK(v->metrics.label_space == Classes{0, 1, 2});
      REQUIRE(v->metrics.evaluation.has_value());
      CHECK(*v->metrics.evaluation == Eval(*second));
    } else {
      // Trained on class 2 alone, it predicts 2 for everything.
      CHECK(second->outcome == storage::RoundOutcome::kRejected);
      CHECK(CheckPassed(*second, "old_class_retention", 0) == false);
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
  INFO(Shown(*second));
  CHECK(Eval(*second).label_space == Classes{0, 1});
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
  CHECK(f.initial.metrics == storage::VersionMetrics{});
  f.Append(BlobsOf(400, 22, {0, 1, 2}));
  auto d = IncrementalDistiller::Create(f.Options());
  REQUIRE(d.ok());
  auto r = (*d)->RunRoundNow("test");
  REQUIRE(r.ok());
  INFO(Shown(*r));
  CHECK(Eval(*r).active_label_space == Classes{0, 1});
  CHECK(Eval(*r).active_label_space_source == storage::LabelSpaceSource::kInferred);
  CHECK(r->outcome == storage::RoundOutcome::kPromoted);
}

}  // namespace
}  // namespace distilld::learner
