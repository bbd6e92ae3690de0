// See idx_dataset.h. zlib's gzread reads plain files transparently, so one
// code path serves both compressed and uncompressed inputs.
#include "learner/idx_dataset.h"

#include <zlib.h>

#include <filesystem>
#include <memory>

#include "learner/train_step.h"

namespace distilld::learner {
namespace {

constexpr int64_t kMaxItems = 10'000'000;
constexpr int64_t kMaxDim = 4096;

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<std::remove_pointer_t<gzFile>, GzCloser>;

Status ReadExact(gzFile f, void* buf, size_t n, const std::string& path) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    unsigned chunk = static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
    int got = gzread(f, p, chunk);
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      return Status::Corruption("reading " + path + ": " + (msg ? msg : "zlib error"));
    }
    if (got == 0) return Status::Corruption(path + " is truncated");
    p += got;
    n -= static_cast<size_t>(got);
  }
  return Status::Ok();
}

uint32_t BigEndian(const unsigned char* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

// Reads the header of an unsigned-byte IDX file with `rank` dimensions.
Result<std::vector<int64_t>> ReadHeader(gzFile f, int rank, const std::string& path) {
  unsigned char magic[4];
  RETURN_IF_ERROR(ReadExact(f, magic, 4, path));
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != rank) {
    return Status::Corruption(path + ": not an unsigned-byte IDX file of rank " + std::to_string(rank));
  }
  std::vector<int64_t> dims;
  for (int i = 0; i < rank; ++i) {
    unsigned char b[4];
    RETURN_IF_ERROR(ReadExact(f, b, 4, path));
    int64_t d = BigEndian(b);
    if (d <= 0 || d > (i == 0 ? kMaxItems : kMaxDim)) {
      return Status::Corruption(path + ": implausible dimension " + std::to_string(d));
    }
    dims.push_back(d);
  }
  return dims;
}

Result<GzPtr> Open(const std::string& path) {
  if (!std::filesystem::exists(path)) return Status::IoError("no such file " + path);
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return Status::IoError("cannot open " + path);
  return GzPtr(f);
}

Result<torch::Tensor> ReadBytes(const std::string& path, int rank) {
  ASSIGN_OR_RETURN(GzPtr f, Open(path));
  ASSIGN_OR_RETURN(std::vector<int64_t> dims, ReadHeader(f.get(), rank, path));
  torch::Tensor t = torch::empty(dims, torch::kUInt8);
  RETURN_IF_ERROR(ReadExact(f.get(), t.data_ptr<uint8_t>(), static_cast<size_t>(t.numel()), path));
  return t;
}

std::string Pick(const std::string& dir, const std::string& base) {
  std::string gz = (std::filesystem::path(dir) / (base + ".gz")).string();
  if (std::filesystem::exists(gz)) return gz;
  return (std::filesystem::path(dir) / base).string();
}

}  // namespace

Result<torch::Tensor> ReadIdxImages(const std::string& path) {
  ASSIGN_OR_RETURN(torch::Tensor bytes, ReadBytes(path, 3));
  return bytes.unsqueeze(1).to(torch::kFloat32).div_(255.0f);
}

Result<torch::Tensor> ReadIdxLabels(const std::string& path) {
  ASSIGN_OR_RETURN(torch::Tensor bytes, ReadBytes(path, 1));
  return bytes.to(torch::kInt64);
}

Result<Dataset> LoadIdxDataset(const std::string& dir, const std::string& split, int64_t limit) {
  Dataset d;
  ASSIGN_OR_RETURN(d.images, ReadIdxImages(Pick(dir, split + "-images-idx3-ubyte")));
  ASSIGN_OR_RETURN(d.labels, ReadIdxLabels(Pick(dir, split + "-labels-idx1-ubyte")));
  if (d.images.size(0) != d.labels.size(0)) {
    return Status::Corruption(dir + ": " + split + " has " + std::to_string(d.images.size(0)) + " images but " +
                              std::to_string(d.labels.size(0)) + " labels");
  }
  if (limit > 0 && limit < d.size()) {
    d.images = d.images.slice(0, 0, limit).contiguous();
    d.labels = d.labels.slice(0, 0, limit).contiguous();
  }
  return d;
}

std::vector<storage::Sample> DatasetToSamples(const Dataset& data, int64_t begin, int64_t end) {
  std::vector<storage::Sample> out;
  end = std::min(end, data.size());
  auto labels = data.labels.accessor<int64_t, 1>();
  for (int64_t i = begin; i < end; ++i) out.push_back(TensorToSample(data.images[i], labels[i]));
  return out;
}

}  // namespace distilld::learner
