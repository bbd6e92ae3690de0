#include "storage/sample.h"

#include <bit>
#include <cstring>
#include <limits>

#include "storage/coding.h"
#include "storage/sample_internal.h"

namespace distilld::storage {
namespace {

// Encoding version 1, all integers little-endian or LEB128:
//   u8 version | u8 dtype | u8 source | u8 flags (bit 0: has label)
//   varint rank | rank x varint dim
//   zigzag-varint ingest_time_us | [zigzag-varint label]
//   varint data_len | data
//   varint logit_count | logit_count x f32 (IEEE-754 bits, LE)
//   varint request_id_len | request_id
// The record must end exactly there. Every length is checked against the
// bytes that remain before anything is allocated.
constexpr uint8_t kEncodingVersion = 1;
constexpr uint8_t kFlagHasLabel = 1;
constexpr uint8_t kKnownFlags = kFlagHasLabel;
// Request ids are client-chosen strings; 64 KiB is far above any real one.
constexpr size_t kMaxRequestIdBytes = 64u << 10;

bool ValidDType(uint8_t v) { return v >= 1 && v <= 7; }
bool ValidSource(uint8_t v) { return v >= 1 && v <= 3; }

// Number of elements, or nullopt if a dim is negative or the product exceeds
// the largest possible sample.
std::optional<uint64_t> CheckedElements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  bool zero = false;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d == 0) zero = true;
  }
  if (zero) return 0;
  for (int64_t d : shape) {
    if (static_cast<uint64_t>(d) > kMaxSampleBytes) return std::nullopt;
    n *= static_cast<uint64_t>(d);
    if (n > kMaxSampleBytes) return std::nullopt;
  }
  return n;
}

Status CheckSample(const Sample& s) {
  if (!ValidDType(static_cast<uint8_t>(s.dtype))) return Status::InvalidArgument("unknown dtype");
  if (!ValidSource(static_cast<uint8_t>(s.source))) {
    return Status::InvalidArgument("unknown sample source");
  }
  if (s.shape.size() > kMaxSampleRank) {
    return Status::InvalidArgument("rank " + std::to_string(s.shape.size()) + " exceeds " +
                                   std::to_string(kMaxSampleRank));
  }
  auto n = CheckedElements(s.shape);
  if (!n) return Status::InvalidArgument("shape has a negative or too large dimension");
  uint64_t want = *n * DTypeSize(s.dtype);
  if (want > kMaxSampleBytes) return Status::InvalidArgument("sample larger than kMaxSampleBytes");
  if (s.data.size() != want) {
    return Status::InvalidArgument("data has " + std::to_string(s.data.size()) +
                                   " bytes, dtype and shape need " + std::to_string(want));
  }
  if (s.teacher_logits.size() > kMaxLogits) return Status::InvalidArgument("too many logits");
  if (s.request_id.size() > kMaxRequestIdBytes) return Status::InvalidArgument("request id too long");
  return Status::Ok();
}

Status Corrupt(const char* what) { return Status::Corruption(std::string("sample record: ") + what); }

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
    case DType::kFloat16: return 2;
    case DType::kUInt8: return 1;
    case DType::kInt8: return 1;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "FP32";
    case DType::kFloat64: return "FP64";
    case DType::kFloat16: return "FP16";
    case DType::kUInt8: return "UINT8";
    case DType::kInt8: return "INT8";
    case DType::kInt64: return "INT64";
    case DType::kInt32: return "INT32";
  }
  return "UNKNOWN";
}

Result<DType> ParseDType(std::string_view name) {
  for (uint8_t v = 1; v <= 7; ++v) {
    auto d = static_cast<DType>(v);
    if (DTypeName(d) == name) return d;
  }
  return Status::InvalidArgument("unknown datatype \"" + std::string(name) + "\"");
}

std::string_view SampleSourceName(SampleSource source) {
  switch (source) {
    case SampleSource::kIngest: return "ingest";
    case SampleSource::kCapture: return "capture";
    case SampleSource::kFeedback: return "feedback";
  }
  return "unknown";
}

int64_t Sample::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::optional<int64_t> Sample::EffectiveClass() const {
  if (label) return *label;
  if (teacher_logits.empty()) return std::nullopt;
  size_t best = 0;
  for (size_t i = 1; i < teacher_logits.size(); ++i) {
    if (teacher_logits[i] > teacher_logits[best]) best = i;
  }
  return static_cast<int64_t>(best);
}

Status EncodeSampleFraming(const Sample& s, int64_t ingest_time_us, std::string* out,
                           size_t* head_len) {
  RETURN_IF_ERROR(CheckSample(s));
  size_t start = out->size();
  out->push_back(static_cast<char>(kEncodingVersion));
  out->push_back(static_cast<char>(s.dtype));
  out->push_back(static_cast<char>(s.source));
  out->push_back(static_cast<char>(s.label ? kFlagHasLabel : 0));
  coding::PutVarint64(out, s.shape.size());
  for (int64_t d : s.shape) coding::PutVarint64(out, static_cast<uint64_t>(d));
  coding::PutVarsint64(out, ingest_time_us);
  if (s.label) coding::PutVarsint64(out, *s.label);
  coding::PutVarint64(out, s.data.size());
  *head_len = out->size() - start;
  // (the data bytes go here)
  coding::PutVarint64(out, s.teacher_logits.size());
  for (float f : s.teacher_logits) coding::PutFixed32(out, std::bit_cast<uint32_t>(f));
  coding::PutVarint64(out, s.request_id.size());
  out->append(s.request_id);
  return Status::Ok();
}

Result<std::string> EncodeSample(const Sample& s) {
  std::string framing;
  size_t head_len = 0;
  RETURN_IF_ERROR(EncodeSampleFraming(s, s.ingest_time_us, &framing, &head_len));
  std::string out;
  out.reserve(framing.size() + s.data.size());
  out.append(framing, 0, head_len);
  out.append(s.data);
  out.append(framing, head_len, std::string::npos);
  return out;
}

Result<Sample> DecodeSample(std::string_view bytes) {
  coding::Reader r(bytes);
  uint8_t version, dtype, source, flags;
  if (!r.GetByte(&version)) return Corrupt("empty");
  if (version != kEncodingVersion) {
    return Status::Corruption("sample record: unknown encoding version " + std::to_string(version));
  }
  if (!r.GetByte(&dtype) || !r.GetByte(&source) || !r.GetByte(&flags)) return Corrupt("truncated header");
  if (!ValidDType(dtype)) return Corrupt("unknown dtype");
  if (!ValidSource(source)) return Corrupt("unknown source");
  if ((flags & ~kKnownFlags) != 0) return Corrupt("unknown flags");

  Sample s;
  s.dtype = static_cast<DType>(dtype);
  s.source = static_cast<SampleSource>(source);
  uint64_t rank;
  if (!r.GetVarint64(&rank)) return Corrupt("truncated rank");
  if (rank > kMaxSampleRank) return Corrupt("rank too large");
  s.shape.reserve(rank);
  for (uint64_t i = 0; i < rank; ++i) {
    uint64_t d;
    if (!r.GetVarint64(&d)) return Corrupt("truncated shape");
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return Corrupt("bad dim");
    s.shape.push_back(static_cast<int64_t>(d));
  }
  if (!r.GetVarsint64(&s.ingest_time_us)) return Corrupt("truncated time");
  if (flags & kFlagHasLabel) {
    int64_t label;
    if (!r.GetVarsint64(&label)) return Corrupt("truncated label");
    s.label = label;
  }
  uint64_t n;
  std::string_view view;
  if (!r.GetVarint64(&n)) return Corrupt("truncated data length");
  if (n > kMaxSampleBytes) return Corrupt("data larger than kMaxSampleBytes");
  if (!r.GetBytes(n, &view)) return Corrupt("truncated data");
  s.data.assign(view);
  if (!r.GetVarint64(&n)) return Corrupt("truncated logit count");
  if (n > kMaxLogits || n * 4 > r.remaining()) return Corrupt("bad logit count");
  s.teacher_logits.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t bits;
    if (!r.GetFixed32(&bits)) return Corrupt("truncated logits");
    s.teacher_logits[i] = std::bit_cast<float>(bits);
  }
  if (!r.GetVarint64(&n)) return Corrupt("truncated request id length");
  if (n > kMaxRequestIdBytes) return Corrupt("request id too long");
  if (!r.GetBytes(n, &view)) return Corrupt("truncated request id");
  s.request_id.assign(view);
  if (!r.empty()) return Corrupt("trailing bytes");
  // Same invariants the encoder enforces (size matches dtype and shape).
  Status st = CheckSample(s);
  if (!st.ok()) return Status::Corruption("sample record: " + st.message());
  return s;
}

}  // namespace distilld::storage
