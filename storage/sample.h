// Sample: one training example as stored, and its versioned binary encoding.
//
// storage/ knows tensors only as (dtype, shape, raw little-endian bytes); it
// never depends on LibTorch. A Sample is a plain value type (thread-compatible).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace distilld::storage {

// Element types, named as in KServe v2 ("FP32", ...). Values are part of the
// stored encoding: never renumber.
enum class DType : uint8_t {
  kFloat32 = 1,
  kFloat64 = 2,
  kFloat16 = 3,
  kUInt8 = 4,
  kInt8 = 5,
  kInt64 = 6,
  kInt32 = 7,
};
// Bytes per element.
size_t DTypeSize(DType dtype);
// KServe v2 datatype name: "FP32", "FP64", "FP16", "UINT8", "INT8", "INT64", "INT32".
std::string_view DTypeName(DType dtype);
// Inverse of DTypeName; InvalidArgument for an unknown name.
Result<DType> ParseDType(std::string_view name);

// Where a sample came from. Values are part of the stored encoding.
enum class SampleSource : uint8_t {
  kIngest = 1,    // POST /v1/samples
  kCapture = 2,   // a fraction of inference traffic
  kFeedback = 3,  // a captured sample whose label arrived via POST /v1/feedback
};
std::string_view SampleSourceName(SampleSource source);  // "ingest", "capture", "feedback"

struct Sample {
  DType dtype = DType::kFloat32;
  // Shape of one sample, without a batch dimension (e.g. {1, 28, 28}).
  std::vector<int64_t> shape;
  // Row-major little-endian element bytes; size == DTypeSize(dtype) * prod(shape).
  std::string data;
  // Class index; absent for unlabelled samples.
  std::optional<int64_t> label;
  // Teacher logits, computed once when the learner first sees the sample and
  // reused by replay. Empty until then.
  std::vector<float> teacher_logits;
  SampleSource source = SampleSource::kIngest;
  // Wall-clock ingest time, microseconds since the epoch.
  int64_t ingest_time_us = 0;
  // Opaque client id for captured samples (so feedback can find them); may be empty.
  std::string request_id;

  int64_t NumElements() const;
  // Class used for class-balanced policies: the label if present, else argmax
  // of teacher_logits, else nullopt.
  std::optional<int64_t> EffectiveClass() const;
  bool operator==(const Sample&) const = default;
};

// Limits the decoder enforces, so a corrupt record cannot make it allocate
// unbounded memory.
inline constexpr size_t kMaxSampleRank = 8;
inline constexpr size_t kMaxSampleBytes = 64u << 20;
inline constexpr size_t kMaxLogits = 1u << 16;

// Compact encoding, versioned by its first byte (currently 1). Validates the
// sample first: InvalidArgument if data size does not match dtype and shape.
Result<std::string> EncodeSample(const Sample& sample);
// Corruption with a reason for truncated, oversized or unknown-version input.
Result<Sample> DecodeSample(std::string_view bytes);

}  // namespace distilld::storage
