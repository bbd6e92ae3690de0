#include "daemon/serving/kserve_codec.h"

#include <cmath>
#include <cstring>

#include "daemon/http/json_util.h"
#include "daemon/serving/tensor_request.h"

namespace distilld::daemon {

using internal::ShapeString;
using internal::TensorRequest;

int64_t ModelSignature::SampleElements() const {
  int64_t n = 1;
  for (int64_t d : input_shape) n *= d;
  return n;
}

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string_view OutputName(OutputKind kind) {
  switch (kind) {
    case OutputKind::kLogits: return "logits";
    case OutputKind::kProbabilities: return "probabilities";
    case OutputKind::kLabel: return "label";
  }
  return "?";
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf or NaN
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

Result<InferRequest> DecodeInferRequest(std::string_view body, std::optional<std::string_view> header_length,
                                        const ModelSignature& model) {
  ASSIGN_OR_RETURN(TensorRequest req, TensorRequest::Parse(body, header_length));
  if (req.inputs().size() != 1) {
    return Status::InvalidArgument("inputs: expected exactly 1 tensor ('" + model.input_name + "'), got " +
                                   std::to_string(req.inputs().size()));
  }
  const internal::InputTensor& in = req.inputs()[0];
  if (in.view.name != model.input_name) {
    return Status::InvalidArgument(in.field + ".name: unknown input '" + in.view.name + "', expected '" +
                                   model.input_name + "'");
  }
  const auto& shape = in.view.shape;
  bool shape_ok = shape.size() == model.input_shape.size() + 1 && shape[0] >= 1;
  for (size_t i = 0; shape_ok && i < model.input_shape.size(); ++i) shape_ok = shape[i + 1] == model.input_shape[i];
  if (!shape_ok) {
    std::string expected = "[N";
    for (int64_t d : model.input_shape) expected += "," + std::to_string(d);
    return Status::InvalidArgument(in.field + ".shape: expected " + expected + "] with N >= 1, got " +
                                   ShapeString(shape));
  }
  InferRequest out;
  out.id = req.id();
  out.batch = shape[0];
  out.dtype = in.view.dtype;
  // AppendAsFloat sizes out.data once the data is known to match the shape;
  // reserving from the client's shape here would allocate before that check.
  RETURN_IF_ERROR(TensorRequest::AppendAsFloat(in, &out.data));

  if (req.outputs().empty()) {
    for (OutputKind k : {OutputKind::kLogits, OutputKind::kProbabilities, OutputKind::kLabel}) {
      out.outputs.push_back({k, req.binary_data_output()});
    }
  } else {
    for (const auto& o : req.outputs()) {
      RequestedOutput r;
      r.binary = o.binary;
      if (o.name == "logits") {
        r.kind = OutputKind::kLogits;
      } else if (o.name == "probabilities") {
        r.kind = OutputKind::kProbabilities;
      } else if (o.name == "label") {
        r.kind = OutputKind::kLabel;
      } else {
        return Status::InvalidArgument(o.field + ".name: unknown output '" + o.name +
                                       "' (offered: logits, probabilities, label)");
      }
      out.outputs.push_back(r);
    }
  }
  return out;
}

EncodedResponse EncodeInferResponse(const ModelSignature& model, int64_t version, const InferRequest& request,
                                    const float* logits) {
  const int64_t n = request.batch;
  const int64_t c = model.classes;
  std::string json;
  json.reserve(256 + static_cast<size_t>(n * c) * 24);
  std::string binary;
  json += "{\"model_name\":";
  AppendJsonString(&json, model.name);
  json += ",\"model_version\":\"";
  AppendJsonInt(&json, version);
  json += '"';
  if (request.id) {
    json += ",\"id\":";
    AppendJsonString(&json, *request.id);
  }
  json += ",\"outputs\":[";

  std::vector<float> probs;
  std::vector<int64_t> labels;
  auto need_probs = [&] {
    if (!probs.empty()) return;
    probs.resize(static_cast<size_t>(n * c));
    for (int64_t i = 0; i < n; ++i) {
      const float* row = logits + i * c;
      float mx = row[0];
      for (int64_t j = 1; j < c; ++j) mx = std::max(mx, row[j]);
      double sum = 0;
      for (int64_t j = 0; j < c; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
      for (int64_t j = 0; j < c; ++j) probs[i * c + j] = static_cast<float>(std::exp(static_cast<double>(row[j] - mx)) / sum);
    }
  };
  auto need_labels = [&] {
    if (!labels.empty()) return;
    labels.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const float* row = logits + i * c;
      int64_t best = 0;
      for (int64_t j = 1; j < c; ++j) {
        if (row[j] > row[best]) best = j;
      }
      labels[i] = best;
    }
  };

  bool first = true;
  for (const RequestedOutput& o : request.outputs) {
    if (!first) json += ',';
    first = false;
    json += "{\"name\":\"";
    json += OutputName(o.kind);
    if (o.kind == OutputKind::kLabel) {
      need_labels();
      json += "\",\"datatype\":\"INT64\",\"shape\":[";
      AppendJsonInt(&json, n);
      json += ']';
      if (o.binary) {
        json += ",\"parameters\":{\"binary_data_size\":";
        AppendJsonInt(&json, n * 8);
        json += "}}";
        binary.append(reinterpret_cast<const char*>(labels.data()), labels.size() * 8);
      } else {
        json += ",\"data\":[";
        for (int64_t i = 0; i < n; ++i) {
          if (i > 0) json += ',';
          AppendJsonInt(&json, labels[i]);
        }
        json += "]}";
      }
      continue;
    }
    const float* values = logits;
    if (o.kind == OutputKind::kProbabilities) {
      need_probs();
      values = probs.data();
    }
    json += "\",\"datatype\":\"FP32\",\"shape\":[";
    AppendJsonInt(&json, n);
    json += ',';
    AppendJsonInt(&json, c);
    json += ']';
    if (o.binary) {
      json += ",\"parameters\":{\"binary_data_size\":";
      AppendJsonInt(&json, n * c * 4);
      json += "}}";
      binary.append(reinterpret_cast<const char*>(values), static_cast<size_t>(n * c) * 4);
    } else {
      json += ",\"data\":[";
      for (int64_t i = 0; i < n * c; ++i) {
        if (i > 0) json += ',';
        AppendJsonFloat(&json, values[i]);
      }
      json += "]}";
    }
  }
  json += "]}";
  EncodedResponse res;
  if (!binary.empty()) {
    res.header_length = json.size();
    json += binary;
  }
  res.body = std::move(json);
  return res;
}

}  // namespace distilld::daemon
