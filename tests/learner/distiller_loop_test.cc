// The learner loop: triggers, the thread's priority, RequestRound and
// the round queue, Stop, yielding to inference, and the state names.
#include "tests/learner/distiller_fixture.h"

namespace distilld::learner {
namespace {

using namespace distiller_test;  // the fixture and its helpers

TEST_CASE("learner states have one name each, and the names parse back") {
  const LearnerState all[] = {LearnerState::kStopped, LearnerState::kIdle,       LearnerState::kReading,
                              LearnerState::kTeacher, LearnerState::kTraining,   LearnerState::kEvaluating,
                              LearnerState::kSaving,  LearnerState::kConsuming};
  std::set<std::string> names;
  for (LearnerState s : all) {
    names.insert(std::string(LearnerStateName(s)));
    auto back = ParseLearnerState(LearnerStateName(s));
    REQUIRE(back.ok());
    CHECK(*back == s);
  }
  CHECK(names.size() == std::size(all));
  CHECK(LearnerStateName(LearnerState::kTraining) == "training");
  CHECK(ParseLearnerState("napping").status().code() == StatusCode::kInvalidArgument);
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
  CHECK((*d)->Progress().state == LearnerState::kStopped);
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
  CHECK(p.state == LearnerState::kTraining);
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
  CHECK(rec->outcome == storage::RoundOutcome::kAborted);
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
  CHECK(round->outcome == storage::RoundOutcome::kPromoted);
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
  CHECK(late->outcome == storage::RoundOutcome::kPromoted);
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
  CHECK(rec->outcome == storage::RoundOutcome::kAborted);
  CHECK(f.ActiveId() == 1);
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
    return f.store->CountIncoming(0).value() == 0 && (*d)->Progress().state == LearnerState::kIdle &&
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
    CHECK((r.outcome == storage::RoundOutcome::kPromoted || r.outcome == storage::RoundOutcome::kRejected || r.outcome == storage::RoundOutcome::kSkipped));
  }
  CHECK(triggers.count("api") == 1);
  CHECK(triggers.count("count") == 1);
  for (int64_t id : ids) {
    auto r = f.registry->GetRound(id);
    REQUIRE(r.ok());
    // Joined ids may be automatic rounds; every one has ended.
    CHECK(r->ended_us.has_value());
    CHECK(r->outcome != storage::RoundOutcome::kRunning);
    CHECK(r->outcome != storage::RoundOutcome::kQueued);
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
  CHECK(f.registry->GetRound(second->round_id)->outcome == storage::RoundOutcome::kQueued);
  CHECK_FALSE(f.registry->GetRound(second->round_id)->ended_us.has_value());
  // A third request joins the queued one.
  auto third = (*d)->RequestRound();
  REQUIRE(third.ok());
  CHECK(third->kind == RoundRequest::Kind::kJoined);
  CHECK(third->round_id == second->round_id);
  (*d)->Stop();
  CHECK(f.registry->GetRound(first->round_id)->outcome == storage::RoundOutcome::kAborted);
  auto queued = f.registry->GetRound(second->round_id);
  REQUIRE(queued.ok());
  CHECK(queued->outcome == storage::RoundOutcome::kAborted);
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
    return r.ok() && r->outcome != storage::RoundOutcome::kQueued && r->outcome != storage::RoundOutcome::kRunning;
  };
  REQUIRE(WaitFor(ended, 120));
  (*d2)->Stop();
  auto skipped = f.registry->GetRound(b->round_id);
  REQUIRE(skipped.ok());
  CHECK(skipped->outcome == storage::RoundOutcome::kSkipped);
  CHECK(skipped->reason == "no new samples: round " + std::to_string(a->round_id) + " (trigger api) took them");
  CHECK(skipped->ended_us.has_value());
}

}  // namespace
}  // namespace distilld::learner
