// See evaluation_json.h.
#include "storage/evaluation_json.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "common/enum_names.h"

namespace distilld::storage {
namespace {

using Writer = JsonWriter;
using Value = rapidjson::Value;

constexpr EnumNames<LabelSpaceSource, 2> kSourceNames{{{LabelSpaceSource::kRecorded, "recorded"},
                                                       {LabelSpaceSource::kInferred, "inferred"}}};

// rapidjson refuses NaN and infinities (and would leave the document cut
// short); they have no JSON form, so they are written as null.
void Number(Writer& w, double v) {
  if (std::isfinite(v)) {
    w.Double(v);
  } else {
    w.Null();
  }
}

void Key(Writer& w, const char* key) { w.Key(key); }

void WriteClasses(Writer& w, const std::set<int64_t>& classes) {
  w.StartArray();
  for (int64_t c : classes) w.Int64(c);
  w.EndArray();
}

void WritePerClass(Writer& w, const std::map<int64_t, ClassAccuracy>& per_class) {
  w.StartObject();
  for (const auto& [cls, a] : per_class) {
    w.Key(std::to_string(cls).c_str());
    w.StartObject();
    Key(w, "acc");
    Number(w, a.accuracy);
    Key(w, "n");
    w.Int64(a.samples);
    w.EndObject();
  }
  w.EndObject();
}

void WriteScore(Writer& w, const ModelScore& s) {
  w.StartObject();
  Key(w, "samples");
  w.Int64(s.samples);
  Key(w, "labelled");
  w.Int64(s.labelled);
  Key(w, "accuracy");
  Number(w, s.accuracy);
  Key(w, "balanced_accuracy");
  Number(w, s.balanced_accuracy);
  Key(w, "with_teacher");
  w.Int64(s.with_teacher);
  Key(w, "agreement");
  Number(w, s.agreement);
  Key(w, "per_class");
  WritePerClass(w, s.per_class);
  if (s.old_space) {
    Key(w, "old_space");
    w.StartObject();
    Key(w, "classes");
    WriteClasses(w, s.old_space->classes);
    Key(w, "accuracy");
    Number(w, s.old_space->accuracy);
    Key(w, "per_class");
    WritePerClass(w, s.old_space->per_class);
    w.EndObject();
  }
  w.EndObject();
}

void WriteGate(Writer& w, const GateVerdict& g) {
  w.StartObject();
  Key(w, "promote");
  w.Bool(g.promote);
  Key(w, "basis");
  w.String(g.basis.c_str());
  Key(w, "reason");
  w.String(g.reason.c_str());
  Key(w, "checks");
  w.StartArray();
  for (const GateCheckResult& c : g.checks) {
    w.StartObject();
    Key(w, "name");
    w.String(c.name.c_str());
    if (c.cls) {
      Key(w, "class");
      w.Int64(*c.cls);
    }
    Key(w, "value");
    Number(w, c.value);
    Key(w, "threshold");
    Number(w, c.threshold);
    Key(w, "pass");
    w.Bool(c.pass);
    if (c.significant) {
      Key(w, "significant");
      w.Bool(*c.significant);
    }
    Key(w, "detail");
    w.String(c.detail.c_str());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

// The evaluation's members, without the braces, so a version's metrics can
// be the same object.
void WriteEvaluationMembers(Writer& w, const RoundEvaluation& e, const std::set<int64_t>& label_space) {
  Key(w, "basis");
  w.String(e.basis.c_str());
  Key(w, "candidate");
  WriteScore(w, e.candidate);
  Key(w, "active");
  WriteScore(w, e.active);
  Key(w, "active_version");
  w.Int64(e.active_version);
  Key(w, "label_space");
  WriteClasses(w, label_space);
  Key(w, "active_label_space");
  WriteClasses(w, e.active_label_space);
  Key(w, "active_label_space_source");
  w.String(std::string(EnumName(kSourceNames, e.active_label_space_source)).c_str());
  Key(w, "holdout");
  w.StartObject();
  Key(w, "size");
  w.Int64(e.holdout_size);
  Key(w, "generation");
  w.Uint64(e.holdout_generation);
  w.EndObject();
  Key(w, "gate");
  WriteGate(w, e.gate);
}

// Lenient readers: a missing or mistyped member leaves the default.
const Value* Member(const Value& v, const char* key) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(key);
  return it == v.MemberEnd() ? nullptr : &it->value;
}
double GetDouble(const Value& v, const char* key) {
  const Value* m = Member(v, key);
  return m != nullptr && m->IsNumber() ? m->GetDouble() : 0.0;
}
int64_t GetInt(const Value& v, const char* key) {
  const Value* m = Member(v, key);
  return m != nullptr && m->IsInt64() ? m->GetInt64() : 0;
}
bool GetBool(const Value& v, const char* key) {
  const Value* m = Member(v, key);
  return m != nullptr && m->IsBool() && m->GetBool();
}
std::string GetString(const Value& v, const char* key) {
  const Value* m = Member(v, key);
  return m != nullptr && m->IsString() ? std::string(m->GetString(), m->GetStringLength()) : std::string();
}

// nullopt unless an array of non-negative integers.
std::optional<std::set<int64_t>> ReadClasses(const Value* v) {
  if (v == nullptr || !v->IsArray()) return std::nullopt;
  std::set<int64_t> out;
  for (const auto& c : v->GetArray()) {
    if (!c.IsInt64() || c.GetInt64() < 0) return std::nullopt;
    out.insert(c.GetInt64());
  }
  return out;
}

std::map<int64_t, ClassAccuracy> ReadPerClass(const Value* v) {
  std::map<int64_t, ClassAccuracy> out;
  if (v == nullptr || !v->IsObject()) return out;
  for (const auto& m : v->GetObject()) {
    char* end = nullptr;
    const long long cls = std::strtoll(m.name.GetString(), &end, 10);
    if (end == m.name.GetString() || *end != '\0') continue;
    out[cls] = ClassAccuracy{GetDouble(m.value, "acc"), GetInt(m.value, "n")};
  }
  return out;
}

ModelScore ReadScore(const Value* v) {
  ModelScore s;
  if (v == nullptr || !v->IsObject()) return s;
  s.samples = GetInt(*v, "samples");
  s.labelled = GetInt(*v, "labelled");
  s.accuracy = GetDouble(*v, "accuracy");
  s.balanced_accuracy = GetDouble(*v, "balanced_accuracy");
  s.with_teacher = GetInt(*v, "with_teacher");
  s.agreement = GetDouble(*v, "agreement");
  s.per_class = ReadPerClass(Member(*v, "per_class"));
  if (const Value* old = Member(*v, "old_space"); old != nullptr && old->IsObject()) {
    RestrictedScore r;
    r.classes = ReadClasses(Member(*old, "classes")).value_or(std::set<int64_t>{});
    r.accuracy = GetDouble(*old, "accuracy");
    r.per_class = ReadPerClass(Member(*old, "per_class"));
    s.old_space = std::move(r);
  }
  return s;
}

GateVerdict ReadGate(const Value* v) {
  GateVerdict g;
  if (v == nullptr || !v->IsObject()) return g;
  g.promote = GetBool(*v, "promote");
  g.basis = GetString(*v, "basis");
  g.reason = GetString(*v, "reason");
  const Value* checks = Member(*v, "checks");
  if (checks == nullptr || !checks->IsArray()) return g;
  for (const auto& c : checks->GetArray()) {
    GateCheckResult r;
    r.name = GetString(c, "name");
    if (const Value* cls = Member(c, "class"); cls != nullptr && cls->IsInt64()) r.cls = cls->GetInt64();
    r.value = GetDouble(c, "value");
    r.threshold = GetDouble(c, "threshold");
    r.pass = GetBool(c, "pass");
    if (const Value* sig = Member(c, "significant"); sig != nullptr && sig->IsBool()) r.significant = sig->GetBool();
    r.detail = GetString(c, "detail");
    g.checks.push_back(std::move(r));
  }
  return g;
}

std::optional<RoundEvaluation> ReadEvaluation(const Value& d) {
  const Value* candidate = Member(d, "candidate");
  if (candidate == nullptr || !candidate->IsObject()) return std::nullopt;
  RoundEvaluation e;
  e.basis = GetString(d, "basis");
  e.candidate = ReadScore(candidate);
  e.active = ReadScore(Member(d, "active"));
  e.active_version = GetInt(d, "active_version");
  e.label_space = ReadClasses(Member(d, "label_space")).value_or(std::set<int64_t>{});
  e.active_label_space = ReadClasses(Member(d, "active_label_space")).value_or(std::set<int64_t>{});
  if (Result<LabelSpaceSource> src = ParseEnum(kSourceNames, GetString(d, "active_label_space_source"), "label space source");
      src.ok()) {
    e.active_label_space_source = *src;
  }
  if (const Value* h = Member(d, "holdout")) {
    e.holdout_size = GetInt(*h, "size");
    const Value* g = Member(*h, "generation");
    e.holdout_generation = g != nullptr && g->IsUint64() ? g->GetUint64() : 0;
  }
  e.gate = ReadGate(Member(d, "gate"));
  return e;
}

bool ParseObject(std::string_view json, rapidjson::Document* d) {
  // Full precision: a stored accuracy reads back as the double that was written.
  d->Parse<rapidjson::kParseFullPrecisionFlag>(json.data(), json.size());
  return !d->HasParseError() && d->IsObject();
}

}  // namespace

void WriteRoundEvaluation(JsonWriter& w, const RoundEvaluation& evaluation) {
  w.StartObject();
  WriteEvaluationMembers(w, evaluation, evaluation.label_space);
  w.EndObject();
}

std::string EncodeRoundEvaluation(const RoundEvaluation& evaluation) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  WriteRoundEvaluation(w, evaluation);
  return buf.GetString();
}

std::optional<RoundEvaluation> DecodeRoundEvaluation(std::string_view json) {
  rapidjson::Document d;
  if (!ParseObject(json, &d)) return std::nullopt;
  return ReadEvaluation(d);
}

void WriteVersionMetrics(JsonWriter& w, const VersionMetrics& metrics) {
  w.StartObject();
  if (metrics.evaluation) {
    WriteEvaluationMembers(w, *metrics.evaluation, metrics.label_space.value_or(metrics.evaluation->label_space));
  } else if (metrics.label_space) {
    Key(w, "label_space");
    WriteClasses(w, *metrics.label_space);
  }
  w.EndObject();
}

std::string EncodeVersionMetrics(const VersionMetrics& metrics) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  WriteVersionMetrics(w, metrics);
  return buf.GetString();
}

VersionMetrics DecodeVersionMetrics(std::string_view json) {
  VersionMetrics m;
  rapidjson::Document d;
  if (!ParseObject(json, &d)) return m;
  m.label_space = ReadClasses(Member(d, "label_space"));
  m.evaluation = ReadEvaluation(d);
  return m;
}

void WriteRoundLoss(JsonWriter& w, const RoundLoss& loss) {
  w.StartObject();
  Key(w, "steps");
  w.Int64(loss.steps);
  Key(w, "recycled_units");
  w.Int64(loss.recycled_units);
  Key(w, "first");
  Number(w, loss.first);
  Key(w, "last");
  Number(w, loss.last);
  Key(w, "mean");
  Number(w, loss.mean);
  w.EndObject();
}

std::string EncodeRoundLoss(const RoundLoss& loss) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  WriteRoundLoss(w, loss);
  return buf.GetString();
}

std::optional<RoundLoss> DecodeRoundLoss(std::string_view json) {
  rapidjson::Document d;
  if (!ParseObject(json, &d) || Member(d, "steps") == nullptr) return std::nullopt;
  RoundLoss l;
  l.steps = GetInt(d, "steps");
  l.recycled_units = GetInt(d, "recycled_units");
  l.first = GetDouble(d, "first");
  l.last = GetDouble(d, "last");
  l.mean = GetDouble(d, "mean");
  return l;
}

}  // namespace distilld::storage
