// mdwe_probe: does LibTorch work under systemd's MemoryDenyWriteExecute=yes?
//
// systemd (v252, Debian 12) implements MemoryDenyWriteExecute= with a seccomp
// filter that fails with EPERM: mmap() asking for PROT_WRITE|PROT_EXEC,
// mprotect()/pkey_mprotect() adding PROT_EXEC, and shmat() with SHM_EXEC
// (seccomp_memory_deny_write_execute() in src/shared/seccomp-util.c). This
// probe installs the same filter on itself (so the question can be answered
// where systemd is not PID 1, e.g. in CI containers), checks the filter bites,
// then runs what distilld runs: a CNN and an MLP forward pass, a training
// step with Adam, and a TorchScript function called repeatedly (profiling
// executor). Any failure is reported on stdout.
//
// Usage: mdwe_probe [--no-filter] [--no-mkldnn]
//   --no-mkldnn turns oneDNN off (at::globalContext().setUserEnabledMkldnn),
//   to see whether its JIT is the only part that needs W+X memory.
// Exit: 0 LibTorch worked, 1 LibTorch failed under the filter, 2 the filter
// could not be installed or did not bite (probe broken, no answer).
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace {

constexpr uint32_t kArg2Low = offsetof(seccomp_data, args) + 2 * sizeof(uint64_t);

// EPERM if (arg2 & mask) == mask, for the syscall at the current position.
// clang-format off
#define DENY_IF_ARG2_HAS(sys, mask)                                        \
  BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (sys), 0, 5),                        \
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArg2Low),                       \
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, (mask)),                        \
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (mask), 0, 1),                  \
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)), \
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr))
// clang-format on

bool InstallMdweFilter() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      DENY_IF_ARG2_HAS(__NR_mmap, PROT_WRITE | PROT_EXEC),
      DENY_IF_ARG2_HAS(__NR_mprotect, PROT_EXEC),
      DENY_IF_ARG2_HAS(__NR_pkey_mprotect, PROT_EXEC),
      DENY_IF_ARG2_HAS(__NR_shmat, SHM_EXEC),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

// The filter must refuse a W+X mapping and an mprotect to executable.
bool FilterBites() {
  void* wx =
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (wx != MAP_FAILED || errno != EPERM) return false;
  void* rw = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (rw == MAP_FAILED) return false;
  bool refused = ::mprotect(rw, 4096, PROT_READ | PROT_EXEC) != 0 && errno == EPERM;
  ::munmap(rw, 4096);
  return refused;
}

struct Net : torch::nn::Module {
  Net() {
    conv1 =
        register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1)));
    conv2 =
        register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)));
    fc = register_module("fc", torch::nn::Linear(32 * 7 * 7, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2);
    return fc->forward(x.flatten(1));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc{nullptr};
};

void RunLibTorch() {
  at::set_num_threads(2);
  torch::manual_seed(1);
  auto net = std::make_shared<Net>();
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  auto x = torch::rand({64, 1, 28, 28});
  auto y = torch::randint(0, 10, {64});
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  auto mlp = torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Linear(784, 64),
                                   torch::nn::ReLU(), torch::nn::Linear(64, 10));
  auto out = mlp->forward(x);
  if (out.size(0) != 64 || out.size(1) != 10) throw std::runtime_error("bad mlp output shape");

  // TorchScript, run enough times for the profiling executor to optimise.
  auto cu = torch::jit::compile(R"JIT(
def f(x, w):
    return torch.softmax(torch.relu(torch.matmul(x, w)) * 2.0 + 1.0, 1)
)JIT");
  auto w = torch::rand({784, 10});
  auto flat = x.flatten(1);
  for (int i = 0; i < 6; ++i) {
    auto r = cu->run_method("f", flat, w).toTensor();
    if (r.size(1) != 10) throw std::runtime_error("bad script output shape");
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool filter = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-filter") == 0) filter = false;
    if (std::strcmp(argv[i], "--no-mkldnn") == 0) at::globalContext().setUserEnabledMkldnn(false);
  }
  if (filter) {
    if (!InstallMdweFilter()) {
      std::printf("probe: cannot install seccomp filter: %s\n", std::strerror(errno));
      return 2;
    }
    if (!FilterBites()) {
      std::printf("probe: filter installed but W+X mappings still allowed\n");
      return 2;
    }
    std::printf("probe: MemoryDenyWriteExecute-equivalent seccomp filter active\n");
  }
  try {
    RunLibTorch();
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::printf("probe: LibTorch FAILED: %s\n", what.substr(0, what.find('\n')).c_str());
    return 1;
  }
  std::printf("probe: LibTorch forward, training step and TorchScript OK\n");
  return 0;
}
