// Shared by the SampleStore contract suites (sample_store_contract_test.cc,
// sample_store_contract_incoming_test.cc): the two implementations every
// templated case runs against, and the helpers their assertions use.
//
// A case takes `Impl` from TEST_CASE_TEMPLATE(..., Impl, Rocks, Fake) and
// opens its store with Impl::Open; Rocks may be opened again on the same
// directory once the previous store is gone, to test what survives a reopen.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "storage/sample_store.h"
#include "tests/support/fake_sample_store.h"
#include "tests/support/temp_dir.h"

namespace distilld::storage {

// The real store, in a temporary directory removed with the object.
struct Rocks {
  testing::TempDir dir;
  std::unique_ptr<SampleStore> Open(Clock* clock) {
    SampleStoreOptions o;
    o.path = dir.str("db");
    o.clock = clock;
    // Durability is not part of this contract (sample_store_test and
    // crash_test cover it); without fsync the cases stay fast.
    o.sync = false;
    auto r = SampleStore::Open(o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    return std::move(r).value();
  }
};

struct Fake {
  std::unique_ptr<SampleStore> Open(Clock* clock) { return testing::NewFakeSampleStore(clock); }
};

using IdList = std::vector<SampleId>;
using Keys = std::vector<std::string>;

inline IdList Ids(const std::vector<StoredSample>& samples) {
  IdList ids;
  for (const auto& s : samples) ids.push_back(s.id);
  return ids;
}

// Keys of a family from `start` in the order Scan visits them.
inline Keys ScanKeys(SampleStore& store, Family family, std::string_view start = "") {
  Keys keys;
  Status st = store.Scan(family, start, [&](std::string_view k, std::string_view) {
    keys.emplace_back(k);
    return true;
  });
  CHECK_MESSAGE(st.ok(), st.ToString());
  return keys;
}

inline std::optional<std::string> GetValue(SampleStore& store, Family family, std::string_view key) {
  auto r = store.Get(family, key);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return *r;
}

}  // namespace distilld::storage

TYPE_TO_STRING_AS("rocksdb", distilld::storage::Rocks);
TYPE_TO_STRING_AS("fake", distilld::storage::Fake);

// A failed CHECK on an id or key list then shows both lists, which is what
// tells the two implementations' answers apart.
template <>
struct doctest::StringMaker<std::vector<uint64_t>> {
  static doctest::String convert(const std::vector<uint64_t>& ids) {
    std::string s = "[";
    for (uint64_t id : ids) s += (s.size() > 1 ? ", " : "") + std::to_string(id);
    return (s + "]").c_str();
  }
};
template <>
struct doctest::StringMaker<std::vector<std::string>> {
  static doctest::String convert(const std::vector<std::string>& keys) {
    std::string s = "[";
    for (const std::string& k : keys) {
      if (s.size() > 1) s += ", ";
      s += '"';
      for (unsigned char c : k) {
        char hex[8];
        if (c >= 0x20 && c < 0x7f) {
          s += static_cast<char>(c);
        } else {
          std::snprintf(hex, sizeof hex, "\\x%02x", c);
          s += hex;
        }
      }
      s += '"';
    }
    return (s + "]").c_str();
  }
};
