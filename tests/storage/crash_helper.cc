// Crash-test child: storage_crash_helper <store dir> <first batch>
//
// Forever: appends batch b to "incoming" (durable), prints "A <b> <first id>
// <last id>", offers the batch to a reservoir ReplayBuffer, prints "O <b>",
// then b + 1. Each line is written with one write(2) after the operation it
// reports has returned, so a line on stdout means the operation was
// acknowledged. The parent kills this process with SIGKILL.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "replaybuffer/replay_buffer.h"
#include "storage/sample_store.h"
#include "tests/storage/crash_samples.h"

namespace {

void Say(const std::string& line) {
  // One write per line: the parent never sees half a line from a live write.
  if (::write(STDOUT_FILENO, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    std::_Exit(3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace distilld;
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <store dir> <first batch>\n", argv[0]);
    return 2;
  }
  storage::SampleStoreOptions so;
  so.path = argv[1];
  so.sync = true;
  auto store = storage::SampleStore::Open(so);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  replaybuffer::ReplayBufferOptions bo;
  bo.capacity = crashtest::kBufferCapacity;
  bo.policy = replaybuffer::Policy::kReservoir;
  auto buffer = replaybuffer::ReplayBuffer::Open(store->get(), bo);
  if (!buffer.ok()) {
    std::fprintf(stderr, "buffer: %s\n", buffer.status().ToString().c_str());
    return 1;
  }
  uint64_t b = std::strtoull(argv[2], nullptr, 10);
  for (;; ++b) {
    std::vector<storage::Sample> batch = crashtest::MakeBatch(b);
    auto ids = (*store)->AppendIncoming(batch);
    if (!ids.ok()) {
      std::fprintf(stderr, "append: %s\n", ids.status().ToString().c_str());
      return 1;
    }
    Say("A " + std::to_string(b) + " " + std::to_string(ids->first) + " " +
        std::to_string(ids->last) + "\n");
    std::mt19937_64 rng(b);
    Status st = (*buffer)->Offer(batch, rng);
    if (!st.ok()) {
      std::fprintf(stderr, "offer: %s\n", st.ToString().c_str());
      return 1;
    }
    Say("O " + std::to_string(b) + "\n");
  }
}
