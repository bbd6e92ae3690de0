#include "daemon/serving/tensor_request.h"

#include <rapidjson/error/en.h>

#include <charconv>
#include <cstddef>
#include <cmath>
#include <cstring>
#include <limits>

namespace distilld::daemon::internal {
namespace {

using storage::DType;

// Local so the codec does not need storage's implementation to link.
std::optional<DType> DTypeFromName(std::string_view name) {
  if (name == "FP32") return DType::kFloat32;
  if (name == "FP64") return DType::kFloat64;
  if (name == "FP16") return DType::kFloat16;
  if (name == "UINT8") return DType::kUInt8;
  if (name == "INT8") return DType::kInt8;
  if (name == "INT64") return DType::kInt64;
  if (name == "INT32") return DType::kInt32;
  return std::nullopt;
}

size_t ElementSize(DType d) {
  switch (d) {
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

const char* Name(DType d) {
  switch (d) {
    case DType::kFloat32: return "FP32";
    case DType::kFloat64: return "FP64";
    case DType::kFloat16: return "FP16";
    case DType::kUInt8: return "UINT8";
    case DType::kInt8: return "INT8";
    case DType::kInt64: return "INT64";
    case DType::kInt32: return "INT32";
  }
  return "?";
}

constexpr int64_t kMaxElements = int64_t{1} << 31;
constexpr int kMaxDepth = 16;

Status Invalid(const std::string& field, const std::string& what) {
  return Status::InvalidArgument(field + ": " + what);
}

// Collects the numbers of a flat or nested JSON array in row-major order.
Status Flatten(const rapidjson::Value& v, int depth, const std::string& field,
               std::vector<const rapidjson::Value*>* out) {
  if (depth > kMaxDepth) return Invalid(field, "data nested too deeply");
  for (const auto& e : v.GetArray()) {
    if (e.IsArray()) {
      RETURN_IF_ERROR(Flatten(e, depth + 1, field, out));
    } else if (e.IsNumber()) {
      out->push_back(&e);
    } else {
      return Invalid(field + ".data[" + std::to_string(out->size()) + "]", "expected a number");
    }
    if (out->size() > static_cast<size_t>(kMaxElements)) return Invalid(field, "too many elements");
  }
  return Status::Ok();
}

template <typename T>
T ReadLE(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // x86/ARM little-endian hosts only
  return v;
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::optional<std::string_view> HeaderLengthOf(const HttpRequest& req) {
  auto it = req.find(kHeaderLengthField);
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

Result<TensorRequest> TensorRequest::Parse(std::string_view body, std::optional<std::string_view> header_length) {
  TensorRequest req;
  std::string_view json = body;
  std::string_view binary;
  if (header_length.has_value()) {
    uint64_t h = 0;
    auto [p, ec] = std::from_chars(header_length->data(), header_length->data() + header_length->size(), h);
    if (ec != std::errc() || p != header_length->data() + header_length->size()) {
      return Status::InvalidArgument("Inference-Header-Content-Length: not a non-negative integer");
    }
    if (h > body.size()) {
      return Status::InvalidArgument("Inference-Header-Content-Length: " + std::to_string(h) +
                                     " exceeds the body size " + std::to_string(body.size()));
    }
    json = body.substr(0, h);
    binary = body.substr(h);
  }
  // One allocation for the document and its first pool chunk: rapidjson's
  // default pool starts with a 64 KiB chunk, which cost more in malloc than
  // parsing a small header did.
  struct PooledDocument {
    alignas(std::max_align_t) char first_chunk[2048];
    rapidjson::MemoryPoolAllocator<> pool{first_chunk, sizeof(first_chunk), 16 * 1024};
    rapidjson::Document doc{&pool};
  };
  auto pooled = std::make_shared<PooledDocument>();
  req.doc_ = std::shared_ptr<rapidjson::Document>(pooled, &pooled->doc);
  rapidjson::Document& doc = *req.doc_;
  doc.Parse<rapidjson::kParseNanAndInfFlag | rapidjson::kParseIterativeFlag>(json.data(), json.size());
  if (doc.HasParseError()) {
    return Status::InvalidArgument(std::string("body: invalid JSON at offset ") +
                                   std::to_string(doc.GetErrorOffset()) + ": " +
                                   rapidjson::GetParseError_En(doc.GetParseError()));
  }
  if (!doc.IsObject()) return Status::InvalidArgument("body: expected a JSON object");

  if (auto it = doc.FindMember("id"); it != doc.MemberEnd()) {
    if (!it->value.IsString()) return Invalid("id", "expected a string");
    req.id_ = std::string(it->value.GetString(), it->value.GetStringLength());
  }
  if (auto it = doc.FindMember("parameters"); it != doc.MemberEnd()) {
    if (!it->value.IsObject()) return Invalid("parameters", "expected an object");
    req.parameters_ = &it->value;
    if (auto b = it->value.FindMember("binary_data_output"); b != it->value.MemberEnd()) {
      if (!b->value.IsBool()) return Invalid("parameters.binary_data_output", "expected a boolean");
      req.binary_data_output_ = b->value.GetBool();
    }
  }

  auto inputs = doc.FindMember("inputs");
  if (inputs == doc.MemberEnd()) return Invalid("inputs", "missing");
  if (!inputs->value.IsArray()) return Invalid("inputs", "expected an array");
  size_t offset = 0;
  size_t index = 0;
  for (const auto& in : inputs->value.GetArray()) {
    InputTensor t;
    t.field = "inputs[" + std::to_string(index++) + "]";
    if (!in.IsObject()) return Invalid(t.field, "expected an object");
    auto name = in.FindMember("name");
    if (name == in.MemberEnd() || !name->value.IsString()) return Invalid(t.field + ".name", "expected a string");
    t.view.name = std::string(name->value.GetString(), name->value.GetStringLength());

    auto dt = in.FindMember("datatype");
    if (dt == in.MemberEnd() || !dt->value.IsString()) return Invalid(t.field + ".datatype", "expected a string");
    std::string_view dt_name(dt->value.GetString(), dt->value.GetStringLength());
    auto dtype = DTypeFromName(dt_name);
    if (!dtype) return Invalid(t.field + ".datatype", "unsupported datatype '" + std::string(dt_name) + "'");
    t.view.dtype = *dtype;

    auto shape = in.FindMember("shape");
    if (shape == in.MemberEnd() || !shape->value.IsArray()) return Invalid(t.field + ".shape", "expected an array");
    if (shape->value.Size() > 8) return Invalid(t.field + ".shape", "rank above 8");
    int64_t count = 1;
    for (const auto& d : shape->value.GetArray()) {
      if (!d.IsInt64() || d.GetInt64() < 0 || d.GetInt64() > kMaxElements) {
        return Invalid(t.field + ".shape", "dimensions must be integers in [0, 2^31]");
      }
      t.view.shape.push_back(d.GetInt64());
      count *= d.GetInt64();
      if (count > kMaxElements) return Invalid(t.field + ".shape", "too many elements");
    }

    std::optional<uint64_t> binary_size;
    if (auto params = in.FindMember("parameters"); params != in.MemberEnd()) {
      if (!params->value.IsObject()) return Invalid(t.field + ".parameters", "expected an object");
      if (auto b = params->value.FindMember("binary_data_size"); b != params->value.MemberEnd()) {
        if (!b->value.IsUint64()) {
          return Invalid(t.field + ".parameters.binary_data_size", "expected a non-negative integer");
        }
        binary_size = b->value.GetUint64();
      }
    }
    auto data = in.FindMember("data");
    if (binary_size.has_value()) {
      if (!header_length.has_value()) {
        return Invalid(t.field + ".parameters.binary_data_size",
                       "binary data needs the Inference-Header-Content-Length header");
      }
      if (data != in.MemberEnd()) return Invalid(t.field, "has both data and binary_data_size");
      if (*binary_size > binary.size() - offset) {
        return Invalid(t.field + ".parameters.binary_data_size",
                       std::to_string(*binary_size) + " bytes, but only " + std::to_string(binary.size() - offset) +
                           " bytes of binary data remain (truncated body?)");
      }
      t.binary = binary.substr(offset, *binary_size);
      offset += *binary_size;
    } else {
      if (data == in.MemberEnd()) return Invalid(t.field + ".data", "missing");
      if (!data->value.IsArray()) return Invalid(t.field + ".data", "expected an array");
      t.data = &data->value;
    }
    req.inputs_.push_back(std::move(t));
  }
  if (offset != binary.size()) {
    return Status::InvalidArgument("binary data: " + std::to_string(binary.size() - offset) +
                                   " bytes after the header are not claimed by any input's binary_data_size");
  }

  if (auto outputs = doc.FindMember("outputs"); outputs != doc.MemberEnd()) {
    if (!outputs->value.IsArray()) return Invalid("outputs", "expected an array");
    index = 0;
    for (const auto& out : outputs->value.GetArray()) {
      OutputRequest o;
      o.field = "outputs[" + std::to_string(index++) + "]";
      if (!out.IsObject()) return Invalid(o.field, "expected an object");
      auto name = out.FindMember("name");
      if (name == out.MemberEnd() || !name->value.IsString()) return Invalid(o.field + ".name", "expected a string");
      o.name = std::string(name->value.GetString(), name->value.GetStringLength());
      o.binary = req.binary_data_output_;
      if (auto params = out.FindMember("parameters"); params != out.MemberEnd()) {
        if (!params->value.IsObject()) return Invalid(o.field + ".parameters", "expected an object");
        if (auto b = params->value.FindMember("binary_data"); b != params->value.MemberEnd()) {
          if (!b->value.IsBool()) return Invalid(o.field + ".parameters.binary_data", "expected a boolean");
          o.binary = b->value.GetBool();
        }
      }
      req.outputs_.push_back(std::move(o));
    }
  }
  return req;
}

Status TensorRequest::AppendAsFloat(const InputTensor& input, std::vector<float>* out) {
  const int64_t count = input.view.NumElements();
  const DType dtype = input.view.dtype;
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kFloat16:
    case DType::kUInt8:
    case DType::kInt8:
      break;
    default:
      return Invalid(input.field + ".datatype", std::string("'") + Name(dtype) +
                                                    "' cannot be converted to the model's FP32 input "
                                                    "(accepted: FP32, FP64, FP16, UINT8, INT8)");
  }
  const size_t base = out->size();
  if (input.binary.has_value()) {
    const size_t esize = ElementSize(dtype);
    const std::string_view bytes = *input.binary;
    if (bytes.size() != static_cast<size_t>(count) * esize) {
      return Invalid(input.field + ".parameters.binary_data_size",
                     std::to_string(bytes.size()) + " bytes, expected " + std::to_string(count * esize) + " for " +
                         Name(dtype) + " shape " + ShapeString(input.view.shape));
    }
    out->resize(base + count);
    float* dst = out->data() + base;
    const char* src = bytes.data();
    switch (dtype) {
      case DType::kFloat32: std::memcpy(dst, src, bytes.size()); break;
      case DType::kFloat64:
        for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(ReadLE<double>(src + 8 * i));
        break;
      case DType::kFloat16:
        for (int64_t i = 0; i < count; ++i) dst[i] = HalfToFloat(ReadLE<uint16_t>(src + 2 * i));
        break;
      case DType::kUInt8:
        for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(static_cast<uint8_t>(src[i]));
        break;
      case DType::kInt8:
        for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(src[i]));
        break;
      default: break;
    }
  } else {
    // Not reserved from `count`: the shape is the client's claim, and a huge
    // one with a short data array would allocate before it is refused.
    std::vector<const rapidjson::Value*> values;
    RETURN_IF_ERROR(Flatten(*input.data, 0, input.field, &values));
    if (static_cast<int64_t>(values.size()) != count) {
      return Invalid(input.field + ".data", std::to_string(values.size()) + " elements, expected " +
                                                std::to_string(count) + " for shape " +
                                                ShapeString(input.view.shape));
    }
    out->resize(base + count);
    float* dst = out->data() + base;
    for (int64_t i = 0; i < count; ++i) {
      const rapidjson::Value& v = *values[i];
      if (dtype == DType::kUInt8 || dtype == DType::kInt8) {
        const int64_t lo = dtype == DType::kUInt8 ? 0 : -128;
        const int64_t hi = dtype == DType::kUInt8 ? 255 : 127;
        if (!v.IsInt64() || v.GetInt64() < lo || v.GetInt64() > hi) {
          return Invalid(input.field + ".data[" + std::to_string(i) + "]",
                         std::string("not an integer in the ") + Name(dtype) + " range");
        }
        dst[i] = static_cast<float>(v.GetInt64());
      } else {
        dst[i] = static_cast<float>(v.GetDouble());
      }
    }
  }
  const float* dst = out->data() + base;
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(dst[i])) {
      out->resize(base);
      return Invalid(input.field + ".data[" + std::to_string(i) + "]", "value is not finite (NaN, Inf or out of FP32 range)");
    }
  }
  return Status::Ok();
}

Status TensorRequest::AppendAsInt64(const InputTensor& input, std::vector<int64_t>* out) {
  const int64_t count = input.view.NumElements();
  const DType dtype = input.view.dtype;
  if (dtype != DType::kInt64 && dtype != DType::kInt32 && dtype != DType::kUInt8 && dtype != DType::kInt8) {
    return Invalid(input.field + ".datatype", std::string("expected an integer datatype, got ") + Name(dtype));
  }
  if (input.binary.has_value()) {
    const size_t esize = ElementSize(dtype);
    const std::string_view bytes = *input.binary;
    if (bytes.size() != static_cast<size_t>(count) * esize) {
      return Invalid(input.field + ".parameters.binary_data_size",
                     std::to_string(bytes.size()) + " bytes, expected " + std::to_string(count * esize));
    }
    for (int64_t i = 0; i < count; ++i) {
      const char* p = bytes.data() + esize * i;
      switch (dtype) {
        case DType::kInt64: out->push_back(ReadLE<int64_t>(p)); break;
        case DType::kInt32: out->push_back(ReadLE<int32_t>(p)); break;
        case DType::kUInt8: out->push_back(static_cast<uint8_t>(*p)); break;
        default: out->push_back(static_cast<int8_t>(*p)); break;
      }
    }
    return Status::Ok();
  }
  std::vector<const rapidjson::Value*> values;
  RETURN_IF_ERROR(Flatten(*input.data, 0, input.field, &values));
  if (static_cast<int64_t>(values.size()) != count) {
    return Invalid(input.field + ".data", std::to_string(values.size()) + " elements, expected " +
                                              std::to_string(count) + " for shape " + ShapeString(input.view.shape));
  }
  for (int64_t i = 0; i < count; ++i) {
    if (!values[i]->IsInt64()) return Invalid(input.field + ".data[" + std::to_string(i) + "]", "expected an integer");
    out->push_back(values[i]->GetInt64());
  }
  return Status::Ok();
}

}  // namespace distilld::daemon::internal
