#include "tests/learner/torch_doctest.h"

#include <chrono>
#include <filesystem>
#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <set>
#include <mutex>
#include <random>
#include <thread>

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cerrno>

#include "learner/distiller.h"
#include "learner/model/model_io.h"
#include "learner/train_step.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

class RecordingPublisher : public VersionPublisher {
 public:
  Status Publish(const storage::VersionRecord& v) override {
    std::lock_guard<std::mutex> lock(mu_);
    published_.push_back(v.id);
    return Status::Ok();
  }
  std::vector<int64_t> published() {
    std::lock_guard<std::mutex> lock(mu_);
    return published_;
  }

 private:
  std::mutex mu_;
  std::vector<int64_t> published_;
};

// Three Gaussian blobs in a 1x2x2 image: class c has mean +2 on pixel c.
std::vector<storage::Sample> Blobs(int n, uint64_t seed, bool labelled = true) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.5f);
  std::vector<storage::Sample> out;
  for (int i = 0; i < n; ++i) {
    int64_t c = static_cast<int64_t>(rng() % 3);
    torch::Tensor x = torch::zeros({1, 2, 2});
    auto a = x.accessor<float, 3>();
    for (int p = 0; p < 4; ++p) a[0][p / 2][p % 2] = noise(rng) + (p == c ? 2.0f : 0.0f);
    out.push_back(TensorToSample(x, labelled ? std::optional<int64_t>(c) : std::nullopt));
  }
  return out;
}

// Blobs of the listed classes only (a phase of a class-incremental stream).
std::vector<storage::Sample> BlobsOf(int n, uint64_t seed, const std::vector<int64_t>& classes) {
  std::vector<storage::Sample> out;
  for (uint64_t round = 0; static_cast<int>(out.size()) < n; ++round) {
    for (auto& s : Blobs(n, seed * 1000 + round)) {
      if (std::find(classes.begin(), classes.end(), *s.label) != classes.end() && static_cast<int>(out.size()) < n) {
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

// A fixed, parameter-free teacher that reads the class off the pixels.
torch::jit::Module BlobTeacher() {
  torch::jit::Module t("BlobTeacher");
  t.define(
      "def features(self, x):\n        return x.flatten(1)\n\n"
      "def forward(self, x):\n        return x.flatten(1).narrow(1, 0, 3) * 3.0\n");
  return t;
}

struct Fixture {
  testing::TempDir dir;
  ManualClock clock;
  std::unique_ptr<storage::SampleStore> store;
  std::unique_ptr<storage::Registry> registry;
  std::unique_ptr<VersionStore> versions;
  std::unique_ptr<replaybuffer::ReplayBuffer> buffer;
  std::unique_ptr<replaybuffer::HoldoutSet> holdout;
  RecordingPublisher publisher;
  storage::VersionRecord initial;

  // student_path: the initial student's file ("" = a built-in MLP 4-8-3).
  explicit Fixture(const std::string& student_path = "") {
    storage::SampleStoreOptions so;
    so.path = dir.str("samples");
    so.sync = false;
    so.clock = &clock;
    store = std::move(storage::SampleStore::Open(so)).value();
    storage::RegistryOptions ro;
    ro.path = dir.str("registry.sqlite");
    ro.clock = &clock;
    registry = std::move(storage::Registry::Open(ro)).value();
    replaybuffer::ReplayBufferOptions bo;
    bo.capacity = 200;
    bo.policy = replaybuffer::Policy::kClassBalanced;
    buffer = std::move(replaybuffer::ReplayBuffer::Open(store.get(), bo)).value();
    replaybuffer::HoldoutOptions ho;
    ho.fraction = 0.2;
    holdout = std::move(replaybuffer::HoldoutSet::Open(store.get(), ho)).value();
    InitialStudentOptions io;
    io.arch = ArchSpec{"mlp", {1, 2, 2}, 3, {8}, {}};
    io.student_path = student_path;
    io.seed = 5;
    versions = std::move(VersionStore::Create({dir.str(), registry.get()})).value();
    auto v = versions->LoadOrCreateInitial(io);
    REQUIRE(v.ok());
    initial = *v;
  }

  DistillerOptions Options() {
    DistillerOptions o;
    o.state_dir = dir.str();
    o.store = store.get();
    o.registry = registry.get();
    o.buffer = buffer.get();
    o.holdout = holdout.get();
    o.publisher = &publisher;
    o.clock = &clock;
    o.teacher = BlobTeacher();
    o.active_version = ActiveId();
    o.learner.learning_rate = 0.05;
    o.learner.epochs = 5;
    o.learner.batch_size = 32;
    o.learner.temperature = 2.0;
    o.learner.nice = 0;
    // Under ctest -j a SCHED_IDLE learner would wait for the other tests'
    // CPU; the policy has its own test below.
    o.learner.idle_priority = false;
    o.poll_interval_ms = 20;
    o.auto_trigger = false;
    return o;
  }

  int64_t ActiveId() { return registry->ActiveVersion().value()->id; }
  void Append(const std::vector<storage::Sample>& s) { REQUIRE(store->AppendIncoming(s).ok()); }
};

double Json(const std::string& json, const std::string& prefix) {
  // Tiny reader for "<prefix>...\"accuracy\":<x>" in our own eval JSON.
  size_t at = json.find(prefix);
  REQUIRE(at != std::string::npos);
  size_t acc = json.find("\"accuracy\":", at);
  REQUIRE(acc != std::string::npos);
  return std::stod(json.substr(acc + 11));
}

// An integer field of a round's loss JSON ({"steps":N,"recycled_units":N,...}).
int64_t LossField(const storage::RoundRecord& r, const std::string& key) {
  const std::string tag = "\"" + key + "\":";
  size_t at = r.loss_json.find(tag);
  REQUIRE(at != std::string::npos);
  return std::stoll(r.loss_json.substr(at + tag.size()));
}

template <typename F>
bool WaitFor(F pred, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

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
  Fixture f;
  f.Append(Blobs(400, 1));
  auto d = IncrementalDistiller::Create(f.Options());
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(round->eval_json, " ", round->reason);
  CHECK(round->outcome == "promoted");
  CHECK(round->samples_new == 400);
  const double cand = Json(round->eval_json, "\"candidate\""), act = Json(round->eval_json, "\"active\"");
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
  CHECK((*d)->Progress().last_outcome == "promoted");
  CHECK((*d)->Progress().active_version == 2);
  // The round record and the swap event are in the registry.
  auto rec = f.registry->GetRound(round->id);
  REQUIRE(rec.ok());
  CHECK(rec->outcome == "promoted");
  CHECK(rec->ended_us.has_value());
  auto events = f.registry->ListEvents(10);
  REQUIRE(events.ok());
  CHECK(events->front().kind == "swap");
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
    REQUIRE(first->outcome == "promoted");
  }
  const int64_t good = f.ActiveId();
  const size_t published = f.publisher.published().size();
  f.Append(Blobs(300, 3));
  DistillerOptions o = f.Options();
  o.learner.learning_rate = 1e6;
  o.learner.optimizer = "sgd";
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(round->reason);
  CHECK((round->outcome == "aborted" || round->outcome == "rejected"));
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
  o.learner.temperature_schedule = {1.0, 6.0, "cosine"};
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(round->reason, " ", round->loss_json);
  CHECK(round->outcome == "promoted");
  CHECK(Json(round->eval_json, "\"candidate\"") > 0.9);
  o.learner.temperature_schedule.curve = "exponential";
  CHECK(IncrementalDistiller::Create(o).status().code() == StatusCode::kInvalidArgument);
  o.learner.temperature_schedule.curve = "constant";
  o.learner.feature.method = "no_such_method";
  f.Append(Blobs(50, 10));
  auto bad = IncrementalDistiller::Create(o);
  REQUIRE(bad.ok());
  auto failed = (*bad)->RunRoundNow("test");
  REQUIRE(failed.ok());
  CHECK(failed->outcome == "failed");
  CHECK(failed->reason.find("no_such_method") != std::string::npos);
}

TEST_CASE("with no labelled holdout the gate uses teacher agreement") {
  Fixture f;
  f.Append(Blobs(300, 4, /*labelled=*/false));
  auto d = IncrementalDistiller::Create(f.Options());
  REQUIRE(d.ok());
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  INFO(round->eval_json);
  CHECK(round->eval_json.find("\"basis\":\"teacher_agreement\"") != std::string::npos);
  CHECK(round->outcome == "promoted");
  CHECK(f.holdout->size() == 0);
}

TEST_CASE("the count trigger starts a round in the background thread") {
  Fixture f;
  DistillerOptions o = f.Options();
  o.auto_trigger = true;
  o.learner.trigger_count = 100;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  REQUIRE((*d)->Start().ok());
  CHECK((*d)->Start().code() == StatusCode::kFailedPrecondition);
  f.Append(Blobs(50, 5));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  CHECK((*d)->Progress().rounds_completed == 0);  // below the count
  f.Append(Blobs(60, 6));
  REQUIRE(WaitFor([&] { return (*d)->Progress().rounds_completed >= 1; }, 30));
  (*d)->Stop();
  auto rounds = f.registry->ListRounds(5);
  REQUIRE(rounds.ok());
  REQUIRE(rounds->size() == 1);
  CHECK(rounds->front().trigger == "count");
  CHECK(rounds->front().samples_new == 110);
  CHECK((*d)->Progress().state == "stopped");
}

TEST_CASE("the interval trigger needs min_samples and the elapsed time") {
  Fixture f;
  DistillerOptions o = f.Options();
  o.auto_trigger = true;
  o.learner.trigger_count = 100000;
  o.learner.trigger_interval_s = 60;
  o.learner.min_samples = 20;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  REQUIRE((*d)->Start().ok());
  f.Append(Blobs(30, 7));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK((*d)->Progress().rounds_completed == 0);  // time has not passed
  f.clock.Advance(61'000'000);
  REQUIRE(WaitFor([&] { return (*d)->Progress().rounds_completed >= 1; }, 30));
  (*d)->Stop();
  CHECK(f.registry->ListRounds(5)->front().trigger == "interval");
}

TEST_CASE("the learner thread runs at its own nice value, SCHED_IDLE and thread count; callers keep theirs") {
  Fixture f;
  DistillerOptions o = f.Options();
  o.learner.nice = 3;
  o.learner.threads = 1;
  o.learner.idle_priority = true;
  errno = 0;
  const int caller_nice = ::getpriority(PRIO_PROCESS, 0);
  REQUIRE(errno == 0);
  const int caller_threads = at::get_num_threads();
  std::mutex mu;
  int learner_nice = -100;
  int learner_policy = -1;
  int learner_threads = -1;
  bool learner_flushes = false;
  o.on_round_end = [&](const storage::RoundRecord&) {
    std::lock_guard<std::mutex> lock(mu);
    errno = 0;
    // The calling thread is the learner thread (see DistillerOptions).
    learner_nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)));
    learner_threads = at::get_num_threads();
    learner_policy = ::sched_getscheduler(0);
    volatile float tiny = 1e-39f;  // subnormal
    learner_flushes = (tiny * 1.0f) == 0.0f;
  };
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  REQUIRE((*d)->Start().ok());
  f.Append(Blobs(60, 9));
  REQUIRE((*d)->RequestRound().ok());
  REQUIRE(WaitFor([&] { return (*d)->Progress().rounds_completed >= 1; }, 30));
  (*d)->Stop();
  std::lock_guard<std::mutex> lock(mu);
  // Raising a nice value needs no privilege, so this holds for any user.
  CHECK(learner_nice == std::min(19, caller_nice + 3));
  CHECK(learner_threads == 1);
  CHECK(learner_policy == SCHED_IDLE);
  CHECK(::sched_getscheduler(0) == SCHED_OTHER);
  CHECK(::getpriority(PRIO_PROCESS, 0) == caller_nice);
  CHECK(at::get_num_threads() == caller_threads);
  // Subnormals flushed on the learner thread only (where the CPU supports it).
  const bool supported = at::globalContext().setFlushDenormal(false);
  CHECK(learner_flushes == supported);
  volatile float tiny = 1e-39f;
  CHECK((tiny * 1.0f) != 0.0f);
}

TEST_CASE("after a round every consumed sample is in exactly one place: holdout or trained and offered") {
  Fixture f;
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

TEST_CASE("RequestRound, and Stop is prompt and leaves no version behind") {
  Fixture f;
  DistillerOptions o = f.Options();
  o.learner.epochs = 100000;  // far longer than the test
  o.learner.batch_size = 8;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  CHECK((*d)->RequestRound().status().code() == StatusCode::kFailedPrecondition);  // not started
  REQUIRE((*d)->Start().ok());
  auto nothing = (*d)->RequestRound();
  REQUIRE(nothing.ok());
  CHECK(nothing->kind == RoundRequest::Kind::kNothingNew);
  CHECK(nothing->round_id == 0);
  CHECK(nothing->message == "no new samples to learn from: send samples with POST /v1/samples first");
  f.Append(Blobs(200, 8));
  auto id = (*d)->RequestRound();
  REQUIRE(id.ok());
  CHECK(id->kind == RoundRequest::Kind::kQueued);
  // Asked again at once: the same round (still queued, or running with every
  // sample), never a second one for the same samples.
  auto again = (*d)->RequestRound();
  REQUIRE(again.ok());
  CHECK(again->kind != RoundRequest::Kind::kQueued);
  CHECK(again->round_id == id->round_id);
  REQUIRE(WaitFor([&] { return (*d)->Progress().step > 5; }, 30));
  auto running = (*d)->RequestRound();
  REQUIRE(running.ok());
  CHECK(running->kind == RoundRequest::Kind::kNothingNew);
  CHECK(running->round_id == id->round_id);
  CHECK(running->message == "no new samples: round " + std::to_string(id->round_id) +
                                " (trigger api) took every sample up to id 200 and is still running; poll GET "
                                "/v1/learner/rounds/" + std::to_string(id->round_id));
  DistillerProgress p = (*d)->Progress();
  CHECK(p.state == "training");
  CHECK(p.round_id == id->round_id);
  CHECK(p.total_steps > p.step);
  CHECK(p.samples_per_s > 0);
  CHECK(std::isfinite(p.loss));
  auto t0 = std::chrono::steady_clock::now();
  (*d)->Stop();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(secs < 1.0);
  auto rec = f.registry->GetRound(id->round_id);
  REQUIRE(rec.ok());
  CHECK(rec->outcome == "aborted");
  CHECK(rec->reason == "stopped");
  CHECK(f.ActiveId() == 1);
  CHECK(f.registry->ListVersions()->size() == 1);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(f.dir.path() / "models")) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);
  // Not consumed: a later round still sees the samples.
  CHECK(f.store->ReadIncoming(0, 1000)->size() > 100);
}

}  // namespace
TEST_CASE("while inference is busy the learner waits before each step, up to learner.max_yield_s per round") {
  Fixture f;
  DistillerOptions o = f.Options();
  std::atomic<int> busy_answers{40};  // "busy" for the first 40 questions
  std::atomic<int> asked{0};
  o.inference_busy = [&] {
    asked.fetch_add(1);
    return busy_answers.fetch_sub(1) > 0;
  };
  o.learner.max_yield_s = 60;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  f.Append(Blobs(200, 31));
  auto round = (*d)->RunRoundNow("test");
  REQUIRE(round.ok());
  CHECK(round->outcome == "promoted");
  // 40 waits of 10 ms before training went on; then one question per step.
  CHECK((*d)->Progress().yielded_ms >= 350);
  CHECK(asked.load() > 40);

  // Busy for ever: the round waits learner.max_yield_s in total, then trains anyway.
  Fixture g;
  DistillerOptions go = g.Options();
  go.inference_busy = [] { return true; };
  go.learner.max_yield_s = 1;
  auto dg = IncrementalDistiller::Create(go);
  REQUIRE(dg.ok());
  g.Append(Blobs(200, 32));
  auto t0 = std::chrono::steady_clock::now();
  auto late = (*dg)->RunRoundNow("test");
  REQUIRE(late.ok());
  CHECK(late->outcome == "promoted");
  const int64_t yielded = (*dg)->Progress().yielded_ms;
  CHECK(yielded >= 1000);
  CHECK(yielded < 2000);
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(1000));
}

TEST_CASE("Stop is prompt while the learner waits for inference") {
  Fixture f;
  DistillerOptions o = f.Options();
  o.inference_busy = [] { return true; };
  o.learner.max_yield_s = 3600;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  REQUIRE((*d)->Start().ok());
  f.Append(Blobs(100, 33));
  auto id = (*d)->RequestRound();
  REQUIRE(id.ok());
  REQUIRE(WaitFor([&] { return (*d)->Progress().yielded_ms >= 50; }, 30));
  CHECK((*d)->Progress().step == 0);
  auto t0 = std::chrono::steady_clock::now();
  (*d)->Stop();
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 1.0);
  auto rec = f.registry->GetRound(id->round_id);
  REQUIRE(rec.ok());
  CHECK(rec->outcome == "aborted");
  CHECK(f.ActiveId() == 1);
}

TEST_CASE("balanced fine-tuning adds epochs over the buffer plus as many new samples per class as it holds") {
  auto steps = [](const storage::RoundRecord& r) { return LossField(r, "steps"); };
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
  CHECK(t1->outcome == "promoted");

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
  CHECK(t2->outcome != "failed");
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
    CHECK(s->outcome == "promoted");
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
  CHECK(LossField(*r_on, "recycled_units") >= 4);  // the four, and any the random init left dead
  CHECK(LossField(*r_off, "recycled_units") == 0);
  CHECK(r_on->outcome == "promoted");

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

namespace {

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
    REQUIRE(first->outcome == "promoted");
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
      CHECK(second->outcome == "promoted");
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
      CHECK(second->outcome == "rejected");
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
  REQUIRE(first->outcome == "promoted");
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
    REQUIRE(r->outcome == "promoted");
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
  CHECK(r->outcome == "promoted");
}

TEST_CASE("every round id RequestRound returns ends, while count triggers fire at the same time") {
  Fixture f;
  DistillerOptions o = f.Options();
  o.auto_trigger = true;
  o.learner.trigger_count = 40;
  o.learner.epochs = 2;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  REQUIRE((*d)->Start().ok());
  std::atomic<bool> done{false};
  std::mutex mu;
  std::set<int64_t> ids;
  int nothing_new = 0;
  std::thread feeder([&] {
    for (int i = 0; i < 60; ++i) {
      f.Append(Blobs(25, 100 + static_cast<uint64_t>(i)));
      std::this_thread::sleep_for(std::chrono::milliseconds(15));
    }
    done = true;
  });
  std::vector<std::thread> clients;
  std::atomic<int> errors{0};
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&] {
      while (!done) {
        auto r = (*d)->RequestRound();
        if (!r.ok()) {
          ++errors;
          continue;
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          if (r->kind == RoundRequest::Kind::kNothingNew) {
            ++nothing_new;
          } else {
            ids.insert(r->round_id);
          }
        }
        // Not flat out: a request queued ahead of every automatic trigger
        // would leave the triggers nothing, and this test wants both kinds.
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
      }
    });
  }
  feeder.join();
  for (auto& t : clients) t.join();
  CHECK(errors == 0);
  // The last samples, fewer than trigger_count, are asked for.
  auto last = (*d)->RequestRound();
  REQUIRE(last.ok());
  if (last->kind != RoundRequest::Kind::kNothingNew) ids.insert(last->round_id);
  // Every sample is consumed, then every round has ended.
  REQUIRE(WaitFor([&] {
    return f.store->CountIncoming(0).value() == 0 && (*d)->Progress().state == "idle" &&
           (*d)->Progress().queued_rounds == 0;
  }, 60));
  (*d)->Stop();
  REQUIRE(!ids.empty());
  auto rounds = f.registry->ListRounds(1000);
  REQUIRE(rounds.ok());
  std::set<std::string> triggers;
  for (const auto& r : *rounds) {
    CAPTURE(r.id);
    CAPTURE(r.reason);
    triggers.insert(r.trigger);
    CHECK(r.ended_us.has_value());
    CHECK((r.outcome == "promoted" || r.outcome == "rejected" || r.outcome == "skipped"));
  }
  CHECK(triggers.count("api") == 1);
  CHECK(triggers.count("count") == 1);
  for (int64_t id : ids) {
    auto r = f.registry->GetRound(id);
    REQUIRE(r.ok());
    // Joined ids may be automatic rounds; every one has ended.
    CHECK(r->ended_us.has_value());
    CHECK(r->outcome != "running");
    CHECK(r->outcome != "queued");
  }
  MESSAGE("api rounds " << ids.size() << ", all rounds " << rounds->size() << ", nothing-new answers " << nothing_new);
}

TEST_CASE("a queued round ends aborted when the learner stops first, and skipped when its samples are gone") {
  Fixture f;
  DistillerOptions o = f.Options();
  o.learner.epochs = 100000;  // the first round runs until stopped
  o.learner.batch_size = 8;
  auto d = IncrementalDistiller::Create(o);
  REQUIRE(d.ok());
  REQUIRE((*d)->Start().ok());
  f.Append(Blobs(100, 51));
  auto first = (*d)->RequestRound();
  REQUIRE(first.ok());
  REQUIRE(WaitFor([&] { return (*d)->Progress().step > 2; }, 30));
  // Samples that arrive while it trains get a round of their own, queued.
  f.Append(Blobs(10, 52));
  auto second = (*d)->RequestRound();
  REQUIRE(second.ok());
  CHECK(second->kind == RoundRequest::Kind::kQueued);
  CHECK(second->round_id == first->round_id + 1);
  CHECK((*d)->Progress().queued_rounds == 1);
  CHECK(f.registry->GetRound(second->round_id)->outcome == "queued");
  CHECK_FALSE(f.registry->GetRound(second->round_id)->ended_us.has_value());
  // A third request joins the queued one.
  auto third = (*d)->RequestRound();
  REQUIRE(third.ok());
  CHECK(third->kind == RoundRequest::Kind::kJoined);
  CHECK(third->round_id == second->round_id);
  (*d)->Stop();
  CHECK(f.registry->GetRound(first->round_id)->outcome == "aborted");
  auto queued = f.registry->GetRound(second->round_id);
  REQUIRE(queued.ok());
  CHECK(queued->outcome == "aborted");
  CHECK(queued->reason == "the learner stopped before the round started");
  CHECK(queued->ended_us.has_value());

  // Restarted with a shorter round: queue one behind it, then take its
  // samples away (as an operator's clean-up might): it ends "skipped",
  // naming the round that read last.
  DistillerOptions quick = f.Options();
  quick.learner.epochs = 300;
  quick.learner.batch_size = 8;
  auto d2 = IncrementalDistiller::Create(quick);
  REQUIRE(d2.ok());
  REQUIRE((*d2)->Start().ok());
  auto a = (*d2)->RequestRound();
  REQUIRE(a.ok());
  REQUIRE(a->kind == RoundRequest::Kind::kQueued);
  REQUIRE(WaitFor([&] { return (*d2)->Progress().step > 2; }, 30));
  auto extra = f.store->AppendIncoming(Blobs(5, 53));
  REQUIRE(extra.ok());
  auto b = (*d2)->RequestRound();
  REQUIRE(b.ok());
  REQUIRE(b->kind == RoundRequest::Kind::kQueued);
  std::vector<storage::Mutation> gone;
  for (storage::SampleId id = extra->first; id <= extra->last; ++id) {
    gone.push_back({storage::Family::kIncoming, storage::SampleStore::IncomingKey(id), std::nullopt});
  }
  REQUIRE(f.store->Apply(gone).ok());
  auto ended = [&] {
    auto r = f.registry->GetRound(b->round_id);
    return r.ok() && r->outcome != "queued" && r->outcome != "running";
  };
  REQUIRE(WaitFor(ended, 120));
  (*d2)->Stop();
  auto skipped = f.registry->GetRound(b->round_id);
  REQUIRE(skipped.ok());
  CHECK(skipped->outcome == "skipped");
  CHECK(skipped->reason == "no new samples: round " + std::to_string(a->round_id) + " (trigger api) took them");
  CHECK(skipped->ended_us.has_value());
}

}  // namespace
}  // namespace distilld::learner
