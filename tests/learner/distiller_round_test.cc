// IncrementalDistiller rounds run by hand (RunRoundNow): what a round
// trains on, what it promotes, where each consumed sample ends up.
#include "tests/learner/distiller_fixture.h"

namespace distilld::learner {
namespace {

using namespace distiller_test;  // the fixture and its helpers

TEST_CASE("initial version is created once, then reused") {
  Fixture f;
  CHECK(f.initial.id == 1);
  CHECK(f.initial.path == "models/v000001.pt");
  CHECK(std::filesystem::exists(f.dir.path() / "models/v000001.pt"));
  InitialStudentOptions io;
  io.arch.kind = "does-not-matter-when-active";
  auto again = f.versions->LoadOrCreateInitial(io);
  REQUIRE(again.ok());
  CHECK(again->id == 1);
  CHECK(f.registry->ListVersions()->size() == 1);
}

TEST_CASE("a round improves held-out accuracy and is promoted") {
  // On RocksDB and SQLite: the round's writes as the daemon makes them.
  Fixture f("", Backend::kReal);
  f.Append(Blobs(400, 1));
  auto d = IncrementalDistiller::Create(f.Options());
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(Shown(*round), " ", round->reason);
  CHECK(round->outcome == storage::RoundOutcome::kPromoted);
  CHECK(round->samples_new == 400);
  const double cand = Eval(*round).candidate.accuracy, act = Eval(*round).active.accuracy;
  CHECK(cand > 0.9);
  CHECK(cand > act + 0.2);
  REQUIRE(round->candidate_version.has_value());
  CHECK(f.ActiveId() == *round->candidate_version);
  CHECK(f.publisher.published() == std::vector<int64_t>{*round->candidate_version});
  auto v = f.registry->GetVersion(*round->candidate_version);
  REQUIRE(v.ok());
  CHECK(v->parent == 1);
  CHECK(v->path == "models/v000002.pt");
  CHECK(f.versions->Load(*v).ok());
  // Samples were consumed: held-out share kept (with teacher logits), the
  // rest offered to the buffer, incoming emptied, cursor advanced.
  CHECK(f.holdout->size() >= 70);
  auto held = f.holdout->All();
  REQUIRE(held.ok());
  CHECK(held->front().teacher_logits.size() == 3);
  CHECK(f.buffer->Stats().size == 200);
  CHECK(f.store->CountIncoming(0).value() == 0);
  CHECK((*d)->Progress().last_outcome == storage::RoundOutcome::kPromoted);
  CHECK((*d)->Progress().active_version == 2);
  // The round record and the swap event are in the registry.
  auto rec = f.registry->GetRound(round->id);
  REQUIRE(rec.ok());
  CHECK(rec->outcome == storage::RoundOutcome::kPromoted);
  CHECK(rec->ended_us.has_value());
  auto events = f.registry->ListEvents(10);
  REQUIRE(events.ok());
  CHECK(events->front().kind == storage::EventKind::kSwap);
  // Nothing left to do.
  CHECK((*d)->RunRoundNow("test").status().code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("a diverging learning rate never replaces the active version") {
  Fixture f;
  f.Append(Blobs(300, 2));
  {
    auto d = IncrementalDistiller::Create(f.Options());
    REQUIRE(d.ok());
    auto first = (*d)->RunRoundNow("test");
    REQUIRE(first.ok());
    INFO(first->reason);
    REQUIRE(first->outcome == storage::RoundOutcome::kPromoted);
  }
  const int64_t good = f.ActiveId();
  const size_t published = f.publisher.published().size();
  f.Append(Blobs(300, 3));
  DistillerOptions o = f.Options();
  o.learner.learning_rate = 1e6;
  o.learner.optimizer = config::Optimizer::kSgd;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(round->reason);
  CHECK((round->outcome == storage::RoundOutcome::kAborted || round->outcome == storage::RoundOutcome::kRejected));
  CHECK_FALSE(round->reason.empty());
  CHECK(f.ActiveId() == good);
  CHECK(f.publisher.published().size() == published);
  if (round->candidate_version) {
    CHECK(f.registry->GetVersion(*round->candidate_version)->status == storage::VersionStatus::kRejected);
  }
}

TEST_CASE("a round with feature distillation and a cosine temperature schedule") {
  Fixture f;
  f.Append(Blobs(300, 9));
  DistillerOptions o = f.Options();
  o.learner.feature.method = "features";  // teacher width 4, student width 8: a learned projection
  o.learner.feature.weight = 0.5;
  o.learner.temperature_schedule = {1.0, 6.0, config::TemperatureCurve::kCosine};
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(round->reason, " ", Loss(*round).steps);
  CHECK(round->outcome == storage::RoundOutcome::kPromoted);
  CHECK(Eval(*round).candidate.accuracy > 0.9);
  o.learner.temperature_schedule.start = 0;  // temperatures must be > 0
  CHECK(IncrementalDistiller::Create(o).status().code() == StatusCode::kInvalidArgument);
  o.learner.temperature_schedule = {4.0, 4.0, config::TemperatureCurve::kConstant};
  o.learner.feature.method = "no_such_method";
  f.Append(Blobs(50, 10));
  auto bad = IncrementalDistiller::Create(o);
  REQUIRE(bad.ok());
  auto failed = (*bad)->RunRoundNow("test");
  REQUIRE(failed.ok());
  CHECK(failed->outcome == storage::RoundOutcome::kFailed);
  CHECK(failed->reason.find("no_such_method") != std::string::npos);
}

TEST_CASE("with no labelled holdout the gate uses teacher agreement") {
  Fixture f;
  f.Append(Blobs(300, 4, /*labelled=*/false));
  auto d = IncrementalDistiller::Create(f.Options());
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(Shown(*round));
  CHECK(Eval(*round).basis == "teacher_agreement");
  CHECK(Eval(*round).gate.basis == "teacher_agreement");
  CHECK(round->outcome == storage::RoundOutcome::kPromoted);
  CHECK(f.holdout->size() == 0);
}

TEST_CASE("after a round every consumed sample is in exactly one place: holdout or trained and offered") {
  // On RocksDB and SQLite: the round's writes as the daemon makes them.
  Fixture f("", Backend::kReal);
  DistillerOptions o = f.Options();
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  REQUIRE((*d)->Start().ok());
  const std::vector<storage::Sample> samples = Blobs(150, 10);
  std::map<int64_t, int> per_class;
  for (const auto& s : samples) per_class[*s.label] += 1;
  uint64_t expected_held = 0;  // the stratified share: floor(0.2 * n) per class
  for (const auto& [c, n] : per_class) expected_held += static_cast<uint64_t>(n / 5);
  f.Append(samples);
  REQUIRE((*d)->RequestRound().ok());
  REQUIRE(WaitFor([&] { return (*d)->Progress().rounds_completed >= 1; }, 30));
  (*d)->Stop();
  CHECK(*f.store->CountIncoming(0) == 0);
  const uint64_t held = f.holdout->size();
  CHECK(held == expected_held);
  CHECK(f.buffer->Stats().seen == 150 - held);
  // No held-out sample was offered to the replay buffer.
  std::mt19937_64 rng(1);
  auto in_buffer = f.buffer->Sample(1000, rng);
  auto in_holdout = f.holdout->All();
  REQUIRE(in_buffer.ok());
  REQUIRE(in_holdout.ok());
  for (const auto& h : *in_holdout) {
    for (const auto& b : *in_buffer) CHECK_FALSE(h.data == b.data);
  }
}

TEST_CASE("balanced fine-tuning adds epochs over the buffer plus as many new samples per class as it holds") {
  auto steps = [](const storage::RoundRecord& r) { return Loss(r).steps; };
  // Same data and seeds, with and without the fine-tuning pass; and both
  // again without replay (replay_ratio 0), where it must not run.
  Fixture plain, tuned, plain_noreplay, tuned_noreplay;
  DistillerOptions po = plain.Options(), to = tuned.Options();
  po.learner.balanced_finetune_epochs = 0;
  to.learner.balanced_finetune_epochs = 2;
  to.learner.balanced_finetune_lr_scale = 0.5;
  DistillerOptions pn = plain_noreplay.Options(), tn = tuned_noreplay.Options();
  pn.learner.balanced_finetune_epochs = po.learner.balanced_finetune_epochs;
  tn.learner.balanced_finetune_epochs = to.learner.balanced_finetune_epochs;
  tn.learner.balanced_finetune_lr_scale = to.learner.balanced_finetune_lr_scale;
  pn.replay.replay_ratio = tn.replay.replay_ratio = 0;
  auto dp = IncrementalDistiller::Create(po);
  auto dt = IncrementalDistiller::Create(to);
  auto dpn = IncrementalDistiller::Create(pn);
  auto dtn = IncrementalDistiller::Create(tn);
  REQUIRE(dp.ok());
  REQUIRE(dt.ok());
  REQUIRE(dpn.ok());
  REQUIRE(dtn.ok());
  const auto first = Blobs(300, 21);
  for (Fixture* f : {&plain, &tuned, &plain_noreplay, &tuned_noreplay}) f->Append(first);
  auto p1 = (*dp)->RunRoundNow("test");
  auto t1 = (*dt)->RunRoundNow("test");
  REQUIRE(p1.ok());
  REQUIRE(t1.ok());
  REQUIRE((*dpn)->RunRoundNow("test").ok());
  REQUIRE((*dtn)->RunRoundNow("test").ok());
  CHECK(steps(*t1) == steps(*p1));  // the buffer was empty: nothing to balance against
  CHECK(t1->outcome == storage::RoundOutcome::kPromoted);

  // A second round where only class 0 arrives, in bulk.
  std::vector<storage::Sample> zeros;
  for (auto& s : Blobs(600, 22)) {
    if (*s.label == 0) zeros.push_back(std::move(s));
  }
  const replaybuffer::BufferStats before = tuned.buffer->Stats();
  REQUIRE(before.size == 200);
  uint64_t labelled = 0, classes = 0;
  for (const auto& [c, n] : before.class_counts) {
    labelled += n;
    classes += n > 0;
  }
  for (Fixture* f : {&plain, &tuned, &plain_noreplay, &tuned_noreplay}) f->Append(zeros);
  auto p2 = (*dp)->RunRoundNow("test");
  auto t2 = (*dt)->RunRoundNow("test");
  auto pn2 = (*dpn)->RunRoundNow("test");
  auto tn2 = (*dtn)->RunRoundNow("test");
  REQUIRE(p2.ok());
  REQUIRE(t2.ok());
  REQUIRE(pn2.ok());
  REQUIRE(tn2.ok());
  // No replay: the buffer is full, yet no fine-tuning pass replays it.
  REQUIRE(tuned_noreplay.buffer->Stats().size == 200);
  CHECK(steps(*tn2) == steps(*pn2));
  // Balanced set: the whole buffer + (buffer size / classes) new class-0
  // samples (about 190 arrived for training, more than that).
  const int64_t set = static_cast<int64_t>(before.size + labelled / classes);
  CHECK(steps(*t2) - steps(*p2) == 2 * ((set + 31) / 32));
  CHECK((*dt)->Progress().total_steps == steps(*t2));
  CHECK(t2->outcome != storage::RoundOutcome::kFailed);
}

TEST_CASE("shifted replay views are relabelled by the teacher every epoch") {
  // The teacher counts the rows it labels; both runs see the same data and
  // seeds, so the difference is the views' relabelling alone.
  auto counting_teacher = [] {
    torch::jit::Module t("CountingTeacher");
    t.register_attribute("rows", c10::IntType::get(), int64_t{0});
    t.define(
        "def forward(self, x):\n"
        "        self.rows += x.size(0)\n"
        "        return x.flatten(1).narrow(1, 0, 3) * 3.0\n");
    return t;
  };
  Fixture plain, shifted;
  DistillerOptions po = plain.Options(), so = shifted.Options();
  po.teacher = counting_teacher();
  so.teacher = counting_teacher();
  so.learner.replay_shift_px = 1;
  auto dp = IncrementalDistiller::Create(po);
  auto ds = IncrementalDistiller::Create(so);
  REQUIRE(dp.ok());
  REQUIRE(ds.ok());
  auto rows = [](const DistillerOptions& o) { return o.teacher.attr("rows").toInt(); };
  for (uint64_t seed : {31, 32}) {
    const auto batch = Blobs(300, seed);
    plain.Append(batch);
    shifted.Append(batch);
    auto p = (*dp)->RunRoundNow("test");
    auto s = (*ds)->RunRoundNow("test");
    REQUIRE(p.ok());
    REQUIRE(s.ok());
    CHECK(s->outcome == storage::RoundOutcome::kPromoted);
    CHECK(s->samples_replay == p->samples_replay);
    // Round 1 has an empty buffer: nothing replayed, nothing relabelled.
    // Round 2: every replayed row once per epoch (5 epochs).
    CHECK(rows(so) - rows(po) == (seed == 31 ? 0 : 5 * s->samples_replay));
  }
  CHECK(rows(so) > rows(po));

  DistillerOptions bad = plain.Options();
  bad.learner.replay_shift_px = -1;
  auto refused = IncrementalDistiller::Create(bad);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message().find("learner.replay_shift_px") != std::string::npos);
}

TEST_CASE("units of the active version that never fire are recycled before training; without it they stay dead") {
  // A built-in student whose hidden units 0-3 never fire: zero weights and
  // a negative bias. Such units get no gradient, so training alone never
  // revives them.
  testing::TempDir files;
  auto built = BuildModel(ArchSpec{"mlp", {1, 2, 2}, 3, {8}, {}}, 5);
  REQUIRE(built.ok());
  {
    torch::NoGradGuard no_grad;
    for (int64_t j = 0; j < 4; ++j) {
      built->attr("fc0_weight").toTensor()[j].zero_();
      built->attr("fc0_bias").toTensor()[j].fill_(-1.0);
    }
  }
  auto saved = SaveModelAtomic(*built, files.str("dead.pt"));
  REQUIRE(saved.ok());
  Fixture on(saved->path), off(saved->path);
  DistillerOptions oo = on.Options(), fo = off.Options();
  fo.learner.recycle_dormant_units = false;
  auto d_on = IncrementalDistiller::Create(oo);
  auto d_off = IncrementalDistiller::Create(fo);
  REQUIRE(d_on.ok());
  REQUIRE(d_off.ok());
  const auto batch = Blobs(300, 41);
  on.Append(batch);
  off.Append(batch);
  auto r_on = (*d_on)->RunRoundNow("test");
  auto r_off = (*d_off)->RunRoundNow("test");
  REQUIRE(r_on.ok());
  REQUIRE(r_off.ok());
  CHECK(Loss(*r_on).recycled_units >= 4);  // the four, and any the random init left dead
  CHECK(Loss(*r_off).recycled_units == 0);
  CHECK(r_on->outcome == storage::RoundOutcome::kPromoted);

  auto fc0 = [](Fixture& f) {
    auto active = f.registry->ActiveVersion();
    REQUIRE(active.ok());
    REQUIRE(active->has_value());
    auto m = LoadModel(f.dir.str((*active)->path), (*active)->sha256);
    REQUIRE(m.ok());
    return m->attr("fc0_weight").toTensor().narrow(0, 0, 4).abs().sum().item<float>();
  };
  CHECK(fc0(on) > 0);  // re-drawn, then trained
  // Not recycled: still exactly zero (whether or not that round's
  // candidate was promoted, the active version's rows are).
  CHECK(fc0(off) == 0);

  DistillerOptions bad = on.Options();
  bad.learner.dormant_threshold = -0.5;
  auto refused = IncrementalDistiller::Create(bad);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message().find("learner.dormant_threshold") != std::string::npos);
}

}  // namespace
}  // namespace distilld::learner
