#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/serving/kserve_codec.h"

using distilld::StatusCode;
using namespace distilld::daemon;

namespace {

ModelSignature Tiny() {
  ModelSignature m;
  m.name = "tiny";
  m.input_name = "input";
  m.input_shape = {1, 2, 2};
  m.classes = 3;
  return m;
}

std::string Body(const std::string& shape, const std::string& datatype, const std::string& data,
                 const std::string& extra = "") {
  return R"({"id":"r1","inputs":[{"name":"input","shape":)" + shape + R"(,"datatype":")" + datatype +
         R"(","data":)" + data + "}]" + extra + "}";
}

std::string ErrorOf(const std::string& body, std::optional<std::string_view> hl = std::nullopt) {
  auto r = DecodeInferRequest(body, hl, Tiny());
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  return r.status().message();
}

}  // namespace

TEST_CASE("codec: flat and nested FP32 JSON decode to the same floats") {
  auto flat = DecodeInferRequest(Body("[2,1,2,2]", "FP32", "[0,0.5,1,1.5,2,2.5,3,3.5]"), std::nullopt, Tiny());
  auto nested = DecodeInferRequest(Body("[2,1,2,2]", "FP32", "[[[[0,0.5],[1,1.5]]],[[[2,2.5],[3,3.5]]]]"),
                                   std::nullopt, Tiny());
  REQUIRE(flat.ok());
  REQUIRE(nested.ok());
  CHECK(flat->batch == 2);
  CHECK(flat->id == std::optional<std::string>("r1"));
  CHECK(flat->data == std::vector<float>{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5});
  CHECK(nested->data == flat->data);
  REQUIRE(flat->outputs.size() == 3);  // all outputs when none are requested
  CHECK_FALSE(flat->outputs[0].binary);
}

TEST_CASE("codec: FP64, UINT8 and INT8 JSON convert to float") {
  auto d = DecodeInferRequest(Body("[1,1,2,2]", "FP64", "[0.25,1e-3,-2,4]"), std::nullopt, Tiny());
  REQUIRE(d.ok());
  CHECK(d->data == std::vector<float>{0.25f, 1e-3f, -2.f, 4.f});
  auto u = DecodeInferRequest(Body("[1,1,2,2]", "UINT8", "[0,1,128,255]"), std::nullopt, Tiny());
  REQUIRE(u.ok());
  CHECK(u->data == std::vector<float>{0, 1, 128, 255});
  auto i = DecodeInferRequest(Body("[1,1,2,2]", "INT8", "[-128,-1,0,127]"), std::nullopt, Tiny());
  REQUIRE(i.ok());
  CHECK(i->data == std::vector<float>{-128, -1, 0, 127});
  CHECK(ErrorOf(Body("[1,1,2,2]", "UINT8", "[0,1,256,3]")).find("inputs[0].data[2]") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "INT8", "[0,1.5,2,3]")).find("inputs[0].data[1]") != std::string::npos);
}

TEST_CASE("codec: validation names the offending field") {
  CHECK(ErrorOf(Body("[1,4]", "FP32", "[1,2,3,4]")).find("inputs[0].shape") != std::string::npos);
  CHECK(ErrorOf(Body("[0,1,2,2]", "FP32", "[]")).find("inputs[0].shape") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,3]", "FP32", "[1,2,3,4,5,6]")).find("inputs[0].shape") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "FP32", "[1,2,3]")).find("inputs[0].data: 3 elements, expected 4") !=
        std::string::npos);
  // A batch size far beyond the data (the shape is capped at 2^31 elements) is
  // refused before anything is sized by it.
  CHECK(ErrorOf(Body("[500000000,1,2,2]", "FP32", "[1,2,3,4]"))
            .find("inputs[0].data: 4 elements, expected 2000000000") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "FP32", "[1,2,NaN,4]")).find("inputs[0].data[2]: value is not finite") !=
        std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "FP32", "[1,2,Infinity,4]")).find("not finite") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "FP64", "[1,2,1e300,4]")).find("inputs[0].data[2]") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "FP32", "[1,2,\"x\",4]")).find("inputs[0].data[2]") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "BOOL", "[1,2,3,4]")).find("inputs[0].datatype") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "INT64", "[1,2,3,4]")).find("inputs[0].datatype") != std::string::npos);
  CHECK(ErrorOf(R"({"inputs":[{"name":"x","shape":[1,1,2,2],"datatype":"FP32","data":[1,2,3,4]}]})")
            .find("inputs[0].name") != std::string::npos);
  CHECK(ErrorOf(R"({"inputs":[]})").find("inputs") == 0);
  CHECK(ErrorOf(R"({"id":7,"inputs":[]})").find("id:") == 0);
  CHECK(ErrorOf("{\"inputs\": [").find("invalid JSON") != std::string::npos);
  CHECK(ErrorOf(Body("[1,1,2,2]", "FP32", "[1,2,3,4]", R"(,"outputs":[{"name":"nope"}])"))
            .find("outputs[0].name") != std::string::npos);
}

TEST_CASE("codec: binary tensor extension, including FP16") {
  const std::string header =
      R"({"inputs":[{"name":"input","shape":[1,1,2,2],"datatype":"FP16","parameters":{"binary_data_size":8}}],)"
      R"("outputs":[{"name":"label","parameters":{"binary_data":true}},{"name":"logits"}]})";
  // 1.0, -2.0, 0.5, 65504 (largest half) as IEEE half.
  const uint16_t halves[4] = {0x3c00, 0xc000, 0x3800, 0x7bff};
  std::string body = header + std::string(reinterpret_cast<const char*>(halves), 8);
  const std::string hl = std::to_string(header.size());
  auto r = DecodeInferRequest(body, hl, Tiny());
  REQUIRE(r.ok());
  CHECK(r->data == std::vector<float>{1.f, -2.f, 0.5f, 65504.f});
  REQUIRE(r->outputs.size() == 2);
  CHECK(r->outputs[0].kind == OutputKind::kLabel);
  CHECK(r->outputs[0].binary);
  CHECK_FALSE(r->outputs[1].binary);

  // Truncated: one byte of tensor data missing.
  CHECK(ErrorOf(body.substr(0, body.size() - 1), hl).find("binary_data_size") != std::string::npos);
  // Header length beyond the body.
  CHECK(ErrorOf(body, std::to_string(body.size() + 1)).find("Inference-Header-Content-Length") !=
        std::string::npos);
  CHECK(ErrorOf(body, std::string("12x")).find("Inference-Header-Content-Length") != std::string::npos);
  // Trailing bytes nobody claims.
  CHECK(ErrorOf(body + "zz", hl).find("not claimed") != std::string::npos);
  // binary_data_size without the header.
  CHECK(ErrorOf(header).find("Inference-Header-Content-Length") != std::string::npos);
  // Size that does not match the shape (FP32 needs 16 bytes).
  std::string h32 = R"({"inputs":[{"name":"input","shape":[1,1,2,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]})";
  CHECK(ErrorOf(h32 + std::string(8, '\0'), std::to_string(h32.size())).find("expected 16") != std::string::npos);
  // Binary NaN is caught too.
  float nan_data[4] = {0, NAN, 0, 0};
  std::string hn = R"({"inputs":[{"name":"input","shape":[1,1,2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}]})";
  CHECK(ErrorOf(hn + std::string(reinterpret_cast<const char*>(nan_data), 16), std::to_string(hn.size()))
            .find("inputs[0].data[1]") != std::string::npos);
}

TEST_CASE("codec: half conversion covers subnormals, infinities and NaN") {
  CHECK(HalfToFloat(0x0000) == 0.0f);
  CHECK(std::signbit(HalfToFloat(0x8000)));
  CHECK(HalfToFloat(0x0001) == doctest::Approx(5.960464477539063e-08));
  CHECK(std::isinf(HalfToFloat(0x7c00)));
  CHECK(std::isnan(HalfToFloat(0x7e00)));
  CHECK(HalfToFloat(0x3555) == doctest::Approx(0.333251953125));
}

TEST_CASE("codec: response JSON carries version, id and derived outputs") {
  auto r = DecodeInferRequest(Body("[2,1,2,2]", "FP32", "[0,0,0,0,1,1,1,1]"), std::nullopt, Tiny());
  REQUIRE(r.ok());
  const float logits[6] = {1, 3, 2, 0, 0, 5};
  EncodedResponse enc = EncodeInferResponse(Tiny(), 7, *r, logits);
  CHECK_FALSE(enc.header_length.has_value());
  CHECK(enc.body.find(R"("model_name":"tiny","model_version":"7","id":"r1")") != std::string::npos);
  CHECK(enc.body.find(R"({"name":"logits","datatype":"FP32","shape":[2,3],"data":[1,3,2,0,0,5]})") !=
        std::string::npos);
  CHECK(enc.body.find(R"({"name":"label","datatype":"INT64","shape":[2],"data":[1,2]})") != std::string::npos);
  // softmax([1,3,2]) = [0.0900, 0.6652, 0.2447]
  CHECK(enc.body.find(R"("name":"probabilities","datatype":"FP32","shape":[2,3],"data":[0.09003057,0.66524094,0.24472848)") !=
        std::string::npos);
}

TEST_CASE("codec: binary outputs follow the JSON header in request order") {
  std::string h = R"({"inputs":[{"name":"input","shape":[1,1,2,2],"datatype":"FP32","data":[0,0,0,0]}],)"
                  R"("parameters":{"binary_data_output":true},"outputs":[{"name":"logits"},{"name":"label"}]})";
  auto r = DecodeInferRequest(h, std::nullopt, Tiny());
  REQUIRE(r.ok());
  const float logits[3] = {0.5f, -1.f, 2.f};
  EncodedResponse enc = EncodeInferResponse(Tiny(), 2, *r, logits);
  REQUIRE(enc.header_length.has_value());
  std::string json = enc.body.substr(0, *enc.header_length);
  CHECK(json.find(R"("name":"logits","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12})") !=
        std::string::npos);
  REQUIRE(enc.body.size() == *enc.header_length + 12 + 8);
  float got[3];
  std::memcpy(got, enc.body.data() + *enc.header_length, 12);
  CHECK(got[2] == 2.f);
  int64_t label;
  std::memcpy(&label, enc.body.data() + *enc.header_length + 12, 8);
  CHECK(label == 2);
}
