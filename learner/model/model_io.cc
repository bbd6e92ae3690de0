// Atomic, checksummed model files. See model_io.h.
#include "learner/model/model_io.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "learner/model/int8_kernels.h"

namespace distilld::learner {
namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// Writes all of `data` to fd, retrying short writes and EINTR.
Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(Errno("write", path));
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(Errno("open dir", dir));
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  if (rc != 0) {
    errno = saved;
    return Status::IoError(Errno("fsync dir", dir));
  }
  return Status::Ok();
}

std::string HexDigest(const unsigned char* md, unsigned int len) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 0xf]);
  }
  return out;
}

Result<std::string> Sha256Bytes(const std::string& data) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) {
    return Status::Internal("EVP SHA-256 failed");
  }
  return HexDigest(md, len);
}

}  // namespace

Result<std::string> Sha256File(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(Errno("open", path));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    ::close(fd);
    return Status::Internal("EVP SHA-256 init failed");
  }
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = Status::IoError(Errno("read", path));
      ::close(fd);
      return st;
    }
    if (n == 0) break;
    if (EVP_DigestUpdate(ctx.get(), buf, static_cast<size_t>(n)) != 1) {
      ::close(fd);
      return Status::Internal("EVP SHA-256 update failed");
    }
  }
  ::close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) return Status::Internal("EVP SHA-256 final failed");
  return HexDigest(md, len);
}

Result<SavedModel> SaveModelAtomic(const torch::jit::Module& module, const std::string& path) {
  // Serialise to memory first: a c10::Error here leaves nothing on disk.
  std::ostringstream os;
  try {
    module.save(os);
  } catch (const c10::Error& e) {
    return Status::Internal("serialising model for " + path + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal("serialising model for " + path + ": " + e.what());
  }
  std::string bytes = std::move(os).str();

  std::filesystem::path target(path);
  std::string dir = target.has_parent_path() ? target.parent_path().string() : std::string(".");
  std::random_device rd;
  std::string tmp = (std::filesystem::path(dir) /
                     ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                      std::to_string(rd())))
                        .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(Errno("create", tmp));
  Status st = WriteAll(fd, bytes, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = Status::IoError(Errno("fsync", tmp));
  if (::close(fd) != 0 && st.ok()) st = Status::IoError(Errno("close", tmp));
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Status::IoError(Errno("rename to", path));
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  RETURN_IF_ERROR(FsyncDir(dir));
  ASSIGN_OR_RETURN(std::string digest, Sha256Bytes(bytes));
  return SavedModel{path, std::move(digest), static_cast<int64_t>(bytes.size())};
}

namespace {

// The last non-empty line of an error: TorchScript puts the traceback
// first and the error itself last.
std::string LastLine(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  const size_t nl = text.rfind('\n');
  return std::string(nl == std::string_view::npos ? text : text.substr(nl + 1));
}

}  // namespace

Status CheckSignature(torch::jit::Module& module, const std::vector<int64_t>& input_shape, int64_t classes) {
  std::vector<int64_t> shape = {2};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  const std::string expected = "[2, " + std::to_string(classes) + "]";
  try {
    torch::NoGradGuard no_grad;
    torch::jit::IValue out = module.forward({torch::zeros(shape)});
    if (!out.isTensor()) {
      return Status::InvalidArgument("forward() returns " + out.tagKind() + ", expected a tensor of logits " + expected);
    }
    const torch::Tensor t = out.toTensor();
    if (t.dim() != 2 || t.size(0) != 2 || t.size(1) != classes) {
      return Status::InvalidArgument("forward() on input " + c10::str(torch::IntArrayRef(shape)) + " returns " +
                                     c10::str(t.sizes()) + ", expected " + expected + " (model.classes " +
                                     std::to_string(classes) + ")");
    }
    if (!torch::isfinite(t).all().item<bool>()) {
      return Status::InvalidArgument("forward() returns non-finite logits (damaged weights?)");
    }
  } catch (const c10::Error& e) {
    return Status::InvalidArgument("forward() on input " + c10::str(torch::IntArrayRef(shape)) +
                                   " (model.input_shape) fails: " + LastLine(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    // TorchScript's interpreter throws its own type, with a traceback first.
    return Status::InvalidArgument("forward() on input " + c10::str(torch::IntArrayRef(shape)) +
                                   " (model.input_shape) fails: " + LastLine(e.what()));
  }
  return Status::Ok();
}

Result<torch::jit::Module> LoadModel(const std::string& path,
                                     const std::optional<std::string>& expected_sha256) {
  // Read once, check the digest of exactly the bytes we then parse (no
  // window in which the file could change between check and load).
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot open model file " + path + ": " + std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Status::IoError("reading model file " + path);
  if (expected_sha256.has_value()) {
    ASSIGN_OR_RETURN(std::string digest, Sha256Bytes(bytes));
    if (digest != *expected_sha256) {
      return Status::Corruption("model file " + path + " has SHA-256 " + digest + ", expected " +
                                *expected_sha256);
    }
  }
  try {
    // A native int8 student calls distilld:: operators; they must be
    // registered before its code is compiled by the loader.
    RegisterNativeInt8Ops();
    std::istringstream is(std::move(bytes));
    torch::jit::Module module = torch::jit::load(is, torch::kCPU);
    module.eval();
    return module;
  } catch (const c10::Error& e) {
    return Status::InvalidArgument("cannot load TorchScript model " + path + ": " +
                                   e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::InvalidArgument("cannot load TorchScript model " + path + ": " + e.what());
  }
}

}  // namespace distilld::learner
