#include "daemon/demo/kserve_client.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstring>

namespace distilld::daemon {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteTensorHeader(Writer& w, const char* name, const char* datatype, int64_t count,
                       const std::vector<int64_t>& sample_shape, size_t bytes) {
  w.StartObject();
  w.Key("name");
  w.String(name);
  w.Key("datatype");
  w.String(datatype);
  w.Key("shape");
  w.StartArray();
  w.Int64(count);
  for (int64_t d : sample_shape) w.Int64(d);
  w.EndArray();
  w.Key("parameters");
  w.StartObject();
  w.Key("binary_data_size");
  w.Uint64(bytes);
  w.EndObject();
  w.EndObject();
}

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

EncodedRequest Finish(rapidjson::StringBuffer& header, std::initializer_list<std::string_view> blobs) {
  EncodedRequest req;
  req.body.assign(header.GetString(), header.GetSize());
  for (std::string_view b : blobs) req.body.append(b.data(), b.size());
  req.headers = {{"Content-Type", "application/octet-stream"},
                 {"Inference-Header-Content-Length", std::to_string(header.GetSize())}};
  return req;
}

}  // namespace

EncodedRequest EncodeInferRequest(const std::string& input_name, const float* data, int64_t count,
                                  const std::vector<int64_t>& sample_shape, const std::string& id) {
  const size_t bytes = static_cast<size_t>(count * Product(sample_shape)) * sizeof(float);
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  if (!id.empty()) {
    w.Key("id");
    w.String(id.c_str());
  }
  w.Key("inputs");
  w.StartArray();
  WriteTensorHeader(w, input_name.c_str(), "FP32", count, sample_shape, bytes);
  w.EndArray();
  w.Key("outputs");
  w.StartArray();
  w.StartObject();
  w.Key("name");
  w.String("label");
  w.EndObject();
  w.EndArray();
  w.EndObject();
  return Finish(sb, {std::string_view(reinterpret_cast<const char*>(data), bytes)});
}

EncodedRequest EncodeSamplesRequest(const float* data, const int64_t* labels, int64_t count,
                                    const std::vector<int64_t>& sample_shape) {
  const size_t bytes = static_cast<size_t>(count * Product(sample_shape)) * sizeof(float);
  const size_t label_bytes = static_cast<size_t>(count) * sizeof(int64_t);
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("inputs");
  w.StartArray();
  WriteTensorHeader(w, "input", "FP32", count, sample_shape, bytes);
  WriteTensorHeader(w, "label", "INT64", count, {}, label_bytes);
  w.EndArray();
  w.EndObject();
  return Finish(sb, {std::string_view(reinterpret_cast<const char*>(data), bytes),
                     std::string_view(reinterpret_cast<const char*>(labels), label_bytes)});
}

Result<InferAnswer> ParseInferAnswer(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.data(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return Status::InvalidArgument("response is not JSON");
  InferAnswer answer;
  if (doc.HasMember("model_version") && doc["model_version"].IsString()) {
    answer.model_version = doc["model_version"].GetString();
  }
  if (!doc.HasMember("outputs") || !doc["outputs"].IsArray()) {
    return Status::InvalidArgument("response has no outputs");
  }
  for (const auto& out : doc["outputs"].GetArray()) {
    if (!out.IsObject() || !out.HasMember("name") || !out["name"].IsString()) continue;
    if (std::strcmp(out["name"].GetString(), "label") != 0) continue;
    if (!out.HasMember("data") || !out["data"].IsArray()) {
      return Status::InvalidArgument("label output has no JSON data");
    }
    for (const auto& v : out["data"].GetArray()) {
      if (!v.IsInt64()) return Status::InvalidArgument("label is not an integer");
      answer.labels.push_back(v.GetInt64());
    }
    return answer;
  }
  return Status::InvalidArgument("response has no label output");
}

}  // namespace distilld::daemon
