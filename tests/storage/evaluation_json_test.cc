// The JSON form of round evaluations, version metrics and loss summaries:
// exact round trips, the shape the API and dashboard read, and lenient
// decoding of what is not ours.
#include "storage/evaluation_json.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "tests/storage/sample_evaluation.h"

namespace distilld::storage {
namespace {

using testing::SampleEvaluation;

bool Has(const std::string& json, const std::string& part) { return json.find(part) != std::string::npos; }

TEST_CASE("a round evaluation round-trips exactly, every field") {
  const RoundEvaluation e = SampleEvaluation();
  const std::string json = EncodeRoundEvaluation(e);
  std::optional<RoundEvaluation> back = DecodeRoundEvaluation(json);
  REQUIRE(back.has_value());
  CHECK(*back == e);
  CHECK(back->holdout_generation == e.holdout_generation);
  CHECK(back->candidate.accuracy == e.candidate.accuracy);  // all digits kept
}

TEST_CASE("the encoded evaluation has the shape the API documents and the dashboard reads") {
  const std::string json = EncodeRoundEvaluation(SampleEvaluation());
  CHECK(Has(json, "\"basis\":\"holdout\",\"candidate\":{\"samples\":300,\"labelled\":290,"));
  CHECK(Has(json, "\"per_class\":{\"0\":{\"acc\":0.99,\"n\":100},\"1\":{\"acc\":0.5,\"n\":90},\"12\":"));
  CHECK(Has(json, "\"old_space\":{\"classes\":[0,1],\"accuracy\":0.875,"));
  CHECK(Has(json, "\"active_version\":7,\"label_space\":[0,1,12],\"active_label_space\":[0,1],"));
  CHECK(Has(json, "\"active_label_space_source\":\"inferred\""));
  CHECK(Has(json, "\"holdout\":{\"size\":300,\"generation\":18000000000000000000}"));
  CHECK(Has(json, "{\"name\":\"old_class_accuracy\",\"class\":1,\"value\":0.4,\"threshold\":0.1,"
                  "\"pass\":false,\"significant\":true,\"detail\":"));
  CHECK(Has(json, "\"reason\":\"class 1 accuracy 0.5 vs active \\\"0.9\\\"\\n\""));
  // A check without a class has no "class" key; the active score no old_space.
  CHECK(Has(json, "{\"name\":\"accuracy\",\"value\":"));
  CHECK(Has(json, "\"active\":{\"samples\":300,\"labelled\":290,\"accuracy\":0.25,"));
  CHECK_FALSE(Has(json.substr(json.find("\"active\":")), "\"old_space\":{\"classes\":[0,1],\"accuracy\":0.875"));
}

TEST_CASE("numbers JSON cannot hold are written as null and read back as 0") {
  RoundEvaluation e = SampleEvaluation();
  e.candidate.accuracy = std::numeric_limits<double>::quiet_NaN();
  e.gate.checks[0].threshold = std::numeric_limits<double>::infinity();
  const std::string json = EncodeRoundEvaluation(e);
  CHECK(Has(json, "\"accuracy\":null"));
  CHECK(Has(json, "\"threshold\":null"));
  std::optional<RoundEvaluation> back = DecodeRoundEvaluation(json);
  REQUIRE(back.has_value());  // the document was not cut short
  CHECK(back->candidate.accuracy == 0);
  CHECK(back->gate.checks.size() == 2);
}

TEST_CASE("version metrics: nothing, a label space alone, or an evaluation with its label space") {
  CHECK(EncodeVersionMetrics({}) == "{}");
  CHECK(DecodeVersionMetrics("{}") == VersionMetrics{});

  VersionMetrics initial;
  initial.label_space = std::set<int64_t>{};
  CHECK(EncodeVersionMetrics(initial) == "{\"label_space\":[]}");
  CHECK(DecodeVersionMetrics("{\"label_space\":[]}") == initial);

  VersionMetrics promoted;
  promoted.evaluation = SampleEvaluation();
  promoted.label_space = promoted.evaluation->label_space;
  const std::string json = EncodeVersionMetrics(promoted);
  CHECK(json == EncodeRoundEvaluation(*promoted.evaluation));  // one object, one "label_space" key
  CHECK(DecodeVersionMetrics(json) == promoted);
}

TEST_CASE("decoding is lenient: what is not ours decodes to nothing recorded") {
  for (const char* bad : {"", "not json", "[1,2]", "42", "{\"candidate\":3}", "{\"label_space\":[0,\"x\"]}",
                          "{\"label_space\":[-1]}"}) {
    CAPTURE(bad);
    CHECK_FALSE(DecodeRoundEvaluation(bad).has_value());
    CHECK_FALSE(DecodeVersionMetrics(bad).label_space.has_value());
    CHECK_FALSE(DecodeRoundLoss(bad).has_value());
  }
  // Missing and mistyped members keep their defaults.
  std::optional<RoundEvaluation> partial =
      DecodeRoundEvaluation(R"({"candidate":{"accuracy":"high","labelled":5},"gate":{"checks":[{"name":"x"}]}})");
  REQUIRE(partial.has_value());
  CHECK(partial->candidate.labelled == 5);
  CHECK(partial->candidate.accuracy == 0);
  REQUIRE(partial->gate.checks.size() == 1);
  CHECK(partial->gate.checks[0].name == "x");
  CHECK_FALSE(partial->gate.checks[0].cls.has_value());
  CHECK(partial->active_label_space_source == LabelSpaceSource::kRecorded);
}

TEST_CASE("a loss summary round-trips") {
  const RoundLoss loss{1234, 5, 2.5, 0.125, 0.75};
  const std::string json = EncodeRoundLoss(loss);
  CHECK(json == "{\"steps\":1234,\"recycled_units\":5,\"first\":2.5,\"last\":0.125,\"mean\":0.75}");
  CHECK(DecodeRoundLoss(json) == loss);
  CHECK_FALSE(DecodeRoundLoss("{}").has_value());
}

}  // namespace
}  // namespace distilld::storage
