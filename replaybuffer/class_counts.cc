#include "replaybuffer/class_counts.h"

namespace distilld::replaybuffer {

namespace coding = storage::coding;

void PutClassCounts(std::string* out, const std::map<int64_t, uint64_t>& counts) {
  coding::PutVarint64(out, counts.size());
  for (const auto& [cls, n] : counts) {
    coding::PutVarsint64(out, cls);
    coding::PutVarint64(out, n);
  }
}

bool GetClassCounts(coding::Reader* in, std::map<int64_t, uint64_t>* counts) {
  uint64_t n;
  if (!in->GetVarint64(&n)) return false;
  if (n > in->remaining() / 2) return false;  // each class takes at least 2 bytes
  for (uint64_t i = 0; i < n; ++i) {
    int64_t cls;
    uint64_t count;
    if (!in->GetVarsint64(&cls) || !in->GetVarint64(&count)) return false;
    (*counts)[cls] = count;
  }
  return true;
}

}  // namespace distilld::replaybuffer
