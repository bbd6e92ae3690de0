// See samples_decode.h.
#include "daemon/api/samples_decode.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <charconv>
#include <string>

#include "daemon/serving/tensor_request.h"

namespace distilld::daemon::api_internal {
namespace {

using storage::Sample;

// Sample index of an element-level error ("...data[123]: ..."), for messages
// that must name the first bad sample.
std::string SampleContext(const Status& st, int64_t per_sample) {
  const std::string& m = st.message();
  size_t p = m.find(".data[");
  if (p == std::string::npos) return st.message();
  int64_t element = 0;
  const char* begin = m.data() + p + 6;
  auto [ptr, ec] = std::from_chars(begin, m.data() + m.size(), element);
  if (ec != std::errc() || *ptr != ']') return st.message();
  return "sample " + std::to_string(element / per_sample) + ": " + m;
}

}  // namespace

Result<DecodedSamples> DecodeSamplesBody(const ModelSignature& model, std::string_view body,
                                         std::optional<std::string_view> header_length) {
  ASSIGN_OR_RETURN(internal::TensorRequest tr, internal::TensorRequest::Parse(body, header_length));
  const internal::InputTensor* input = nullptr;
  const internal::InputTensor* label = nullptr;
  for (const auto& t : tr.inputs()) {
    if (t.view.name == model.input_name) {
      input = &t;
    } else if (t.view.name == "label") {
      label = &t;
    } else {
      return Status::InvalidArgument(t.field + ".name: unknown input '" + t.view.name +
                                     "' (expected '" + model.input_name +
                                     "' and optionally 'label')");
    }
  }
  if (input == nullptr)
    return Status::InvalidArgument("inputs: no tensor named '" + model.input_name + "'");
  const auto& shape = input->view.shape;
  if (shape.size() != model.input_shape.size() + 1 ||
      !std::equal(model.input_shape.begin(), model.input_shape.end(), shape.begin() + 1) ||
      shape[0] < 1) {
    std::vector<int64_t> expected = {-1};
    expected.insert(expected.end(), model.input_shape.begin(), model.input_shape.end());
    return Status::InvalidArgument(input->field + ".shape: got " + internal::ShapeString(shape) +
                                   ", expected " + internal::ShapeString(expected));
  }
  const int64_t n = shape[0];
  const int64_t per_sample = model.SampleElements();
  std::vector<float> values;  // sized by AppendAsFloat once the data matches the shape
  Status st = internal::TensorRequest::AppendAsFloat(*input, &values);
  if (!st.ok()) return Status::InvalidArgument(SampleContext(st, per_sample));
  std::vector<int64_t> labels;
  if (label != nullptr) {
    if (label->view.shape != std::vector<int64_t>{n}) {
      return Status::InvalidArgument(label->field + ".shape: got " +
                                     internal::ShapeString(label->view.shape) + ", expected [" +
                                     std::to_string(n) + "]");
    }
    RETURN_IF_ERROR(internal::TensorRequest::AppendAsInt64(*label, &labels));
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] < -1 || labels[i] >= model.classes) {
        return Status::InvalidArgument("sample " + std::to_string(i) + ": " + label->field +
                                       ".data[" + std::to_string(i) + "]: label " +
                                       std::to_string(labels[i]) + " outside [-1, " +
                                       std::to_string(model.classes - 1) + "]");
      }
    }
  }
  bool holdout = false;
  if (const rapidjson::Value* params = tr.parameters()) {
    if (auto h = params->FindMember("holdout"); h != params->MemberEnd()) {
      if (!h->value.IsBool())
        return Status::InvalidArgument("parameters.holdout: expected a boolean");
      holdout = h->value.GetBool();
    }
  }
  if (holdout) {
    if (label == nullptr) {
      return Status::InvalidArgument("parameters.holdout: held-out samples need a 'label' input");
    }
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] < 0) {
        return Status::InvalidArgument("sample " + std::to_string(i) + ": " + label->field +
                                       ".data[" + std::to_string(i) +
                                       "]: held-out samples need a label, got -1");
      }
    }
  }
  std::vector<Sample> samples(static_cast<size_t>(n));
  const size_t bytes = static_cast<size_t>(per_sample) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    Sample& s = samples[i];
    s.dtype = storage::DType::kFloat32;
    s.shape = model.input_shape;
    s.data.assign(reinterpret_cast<const char*>(values.data() + i * per_sample), bytes);
    if (!labels.empty() && labels[i] >= 0) s.label = labels[i];
    s.source = storage::SampleSource::kIngest;
  }
  return DecodedSamples{std::move(samples), holdout};
}

}  // namespace distilld::daemon::api_internal
