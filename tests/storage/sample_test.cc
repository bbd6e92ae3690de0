#include "storage/sample.h"

#include <doctest/doctest.h>

#include <random>

namespace distilld::storage {
namespace {

const DType kAllDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kUInt8,
                            DType::kInt8,    DType::kInt64,   DType::kInt32};

Sample MakeSample(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng) {
  Sample s;
  s.dtype = dtype;
  s.shape = std::move(shape);
  s.data.resize(static_cast<size_t>(s.NumElements()) * DTypeSize(dtype));
  for (char& c : s.data) c = static_cast<char>(rng());
  return s;
}

void CheckRoundTrip(const Sample& s) {
  Result<std::string> enc = EncodeSample(s);
  REQUIRE(enc.ok());
  Result<Sample> dec = DecodeSample(*enc);
  REQUIRE(dec.ok());
  CHECK(*dec == s);
  // Deterministic: the same sample always encodes to the same bytes.
  CHECK(*EncodeSample(*dec) == *enc);
}

TEST_CASE("dtype names and sizes") {
  CHECK(DTypeSize(DType::kFloat32) == 4);
  CHECK(DTypeSize(DType::kFloat64) == 8);
  CHECK(DTypeSize(DType::kFloat16) == 2);
  CHECK(DTypeSize(DType::kUInt8) == 1);
  CHECK(DTypeSize(DType::kInt8) == 1);
  CHECK(DTypeSize(DType::kInt64) == 8);
  CHECK(DTypeSize(DType::kInt32) == 4);
  for (DType d : kAllDTypes) {
    Result<DType> parsed = ParseDType(DTypeName(d));
    REQUIRE(parsed.ok());
    CHECK(*parsed == d);
  }
  CHECK(DTypeName(DType::kFloat32) == "FP32");
  CHECK(ParseDType("BF16").status().code() == StatusCode::kInvalidArgument);
  CHECK(ParseDType("fp32").status().code() == StatusCode::kInvalidArgument);
  CHECK(SampleSourceName(SampleSource::kFeedback) == "feedback");
}

TEST_CASE("every dtype round-trips, with and without label, logits and request id") {
  std::mt19937_64 rng(1);
  for (DType d : kAllDTypes) {
    CAPTURE(DTypeName(d));
    Sample s = MakeSample(d, {1, 28, 28}, rng);
    CheckRoundTrip(s);  // no label, no logits
    s.label = 7;
    s.teacher_logits = {0.5f, -1.25f, 3.0f, -0.0f, 1e-30f, 3.4e38f};
    s.source = SampleSource::kCapture;
    s.ingest_time_us = 1'764'000'000'123'456;
    s.request_id = "req-\x01\xff-42";
    CheckRoundTrip(s);
  }
}

TEST_CASE("odd shapes and labels round-trip") {
  std::mt19937_64 rng(2);
  const std::vector<std::vector<int64_t>> shapes = {
      {}, {0}, {1}, {3, 0, 5}, {7}, {2, 3, 5, 7}, {1, 1, 1, 1, 1, 1, 1, 9}, {300, 301}};
  for (const auto& shape : shapes) {
    for (DType d : {DType::kUInt8, DType::kFloat64}) {
      Sample s = MakeSample(d, shape, rng);
      s.label = -3;  // negative labels are stored as given
      s.ingest_time_us = -5;
      s.source = SampleSource::kFeedback;
      CheckRoundTrip(s);
      s.label = INT64_MAX;
      s.ingest_time_us = INT64_MIN;
      CheckRoundTrip(s);
    }
  }
  Sample scalar = MakeSample(DType::kInt64, {}, rng);
  CHECK(scalar.NumElements() == 1);
  CHECK(scalar.data.size() == 8);
}

TEST_CASE("the encoding is little-endian and versioned by its first byte") {
  Sample s;
  s.dtype = DType::kFloat32;
  s.shape = {2};
  s.data = std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f little-endian
  s.label = 3;
  s.teacher_logits = {1.0f};
  s.ingest_time_us = 5;
  s.request_id = "r";
  Result<std::string> enc = EncodeSample(s);
  REQUIRE(enc.ok());
  const std::string want(
      "\x01"              // version
      "\x01\x01\x01"      // FP32, ingest, has label
      "\x01\x02"          // rank 1, dim 2
      "\x0a"              // time 5 (zigzag)
      "\x06"              // label 3 (zigzag)
      "\x08\x00\x00\x80\x3f\x00\x00\x00\x40"  // data
      "\x01\x00\x00\x80\x3f"                  // one logit, 1.0f
      "\x01r",
      24);
  CHECK(*enc == want);
  std::string v2 = *enc;
  v2[0] = 2;
  Result<Sample> dec = DecodeSample(v2);
  CHECK(dec.status().code() == StatusCode::kCorruption);
  CHECK(dec.status().message().find("version") != std::string::npos);
}

TEST_CASE("encoder validates the sample") {
  std::mt19937_64 rng(3);
  Sample s = MakeSample(DType::kFloat32, {2, 2}, rng);
  s.data.pop_back();
  CHECK(EncodeSample(s).status().code() == StatusCode::kInvalidArgument);
  s = MakeSample(DType::kFloat32, {2, 2}, rng);
  s.shape = {-2, -2};  // product matches, but dims are negative
  CHECK(EncodeSample(s).status().code() == StatusCode::kInvalidArgument);
  s = MakeSample(DType::kUInt8, {1, 1, 1, 1, 1, 1, 1, 1}, rng);
  CHECK(EncodeSample(s).ok());
  s.shape.push_back(1);  // rank 9
  CHECK(EncodeSample(s).status().code() == StatusCode::kInvalidArgument);
  s = MakeSample(DType::kUInt8, {4}, rng);
  s.dtype = static_cast<DType>(42);
  CHECK(EncodeSample(s).status().code() == StatusCode::kInvalidArgument);
  // A shape whose product overflows int64 is refused, not wrapped around.
  s = MakeSample(DType::kUInt8, {0}, rng);
  s.shape = {INT64_MAX, INT64_MAX, 4};
  s.data = "abcd";
  CHECK(EncodeSample(s).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("maximum sizes") {
  Sample big;
  big.dtype = DType::kUInt8;
  big.shape = {static_cast<int64_t>(kMaxSampleBytes)};
  big.data.assign(kMaxSampleBytes, '\x5a');
  big.teacher_logits.assign(kMaxLogits, 0.25f);
  big.label = 1;
  CheckRoundTrip(big);

  Sample too_big = big;
  too_big.shape = {static_cast<int64_t>(kMaxSampleBytes) + 1};
  too_big.data.push_back('x');
  CHECK(EncodeSample(too_big).status().code() == StatusCode::kInvalidArgument);

  Sample too_many_logits;
  too_many_logits.dtype = DType::kUInt8;
  too_many_logits.shape = {1};
  too_many_logits.data = "x";
  too_many_logits.teacher_logits.assign(kMaxLogits + 1, 1.0f);
  CHECK(EncodeSample(too_many_logits).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("decoder returns Corruption for every truncation and trailing bytes") {
  std::mt19937_64 rng(4);
  Sample s = MakeSample(DType::kFloat32, {3, 4}, rng);
  s.label = 9;
  s.teacher_logits = {1, 2, 3};
  s.request_id = "abc";
  std::string enc = *EncodeSample(s);
  for (size_t n = 0; n < enc.size(); ++n) {
    CAPTURE(n);
    CHECK(DecodeSample(std::string_view(enc).substr(0, n)).status().code() ==
          StatusCode::kCorruption);
  }
  CHECK(DecodeSample(enc + '\0').status().code() == StatusCode::kCorruption);
}

TEST_CASE("decoder survives garbage without large allocations") {
  // Claims of huge lengths must be checked against the input before any
  // allocation: a 12-byte record announcing 2^62 bytes of data.
  std::string huge("\x01\x04\x01\x00\x00\x00", 6);
  huge += "\x80\x80\x80\x80\x80\x80\x80\x80\x40";  // varint 2^62
  CHECK(DecodeSample(huge).status().code() == StatusCode::kCorruption);
  std::string huge_logits("\x01\x04\x01\x00\x00\x00\x00", 7);  // rank 0, time 0, data len 0
  huge_logits += "\xff\xff\x03";                                 // 65535 logits, no bytes
  CHECK(DecodeSample(huge_logits).status().code() == StatusCode::kCorruption);
  // An over-long varint (11 bytes) is refused.
  std::string long_varint("\x01\x04\x01\x00", 4);
  long_varint += std::string(10, '\xff') + '\x01';
  CHECK(DecodeSample(long_varint).status().code() == StatusCode::kCorruption);

  std::mt19937_64 rng(5);
  Sample s = MakeSample(DType::kInt32, {5, 5}, rng);
  s.label = 1;
  s.teacher_logits = {0.1f, 0.2f};
  const std::string valid = *EncodeSample(s);
  int ok = 0, corrupt = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string input;
    if (iter % 2 == 0) {
      // Random bytes behind a valid version byte, so the parser goes deep.
      input.resize(rng() % 200);
      for (char& c : input) c = static_cast<char>(rng());
      if (!input.empty()) input[0] = 1;
    } else {
      input = valid;  // a valid record with a few flipped bytes
      for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) {
        input[rng() % input.size()] ^= static_cast<char>(1 + rng() % 255);
      }
    }
    Result<Sample> r = DecodeSample(input);
    if (r.ok()) {
      ++ok;
      // Whatever decodes is a valid sample that re-encodes.
      CHECK(EncodeSample(*r).ok());
    } else {
      ++corrupt;
      CHECK(r.status().code() == StatusCode::kCorruption);
    }
  }
  CHECK(corrupt > 0);
  CHECK(ok + corrupt == 20000);
}

TEST_CASE("effective class: label, else argmax of teacher logits") {
  Sample s;
  CHECK(!s.EffectiveClass().has_value());
  s.teacher_logits = {0.1f, 2.0f, -1.0f, 1.9f};
  CHECK(s.EffectiveClass() == 1);
  s.label = 3;
  CHECK(s.EffectiveClass() == 3);
}

}  // namespace
}  // namespace distilld::storage
