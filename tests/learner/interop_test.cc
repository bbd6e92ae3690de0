// A built-in student saved by distilld loads in Python torch.jit.load
// (Debian's python3-torch) and gives the same logits within 1e-6.
#include "tests/learner/torch_doctest.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "learner/model/arch.h"
#include "learner/model/model_io.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace distilld::learner {
namespace {

constexpr const char* kPython = "/usr/bin/python3";

std::string SourceDir() {
  const char* env = std::getenv("DISTILLD_SOURCE_DIR");
  return env != nullptr ? env : DISTILLD_SOURCE_DIR_DEFAULT;
}

bool PythonTorchAvailable() {
  std::string cmd = std::string(kPython) + " -c 'import torch' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

void CompareWithPython(const ArchSpec& spec, const testing::TempDir& dir) {
  CAPTURE(spec.kind);
  auto m = BuildModel(spec, 11);
  REQUIRE(m.ok());
  auto saved = SaveModelAtomic(*m, dir.str(spec.kind + ".pt"));
  REQUIRE(saved.ok());
  // A fixed, non-trivial input.
  const int64_t n = 3;
  torch::Tensor x = torch::sin(torch::arange(n * spec.input_shape[0] * spec.input_shape[1] * spec.input_shape[2],
                                             torch::kFloat32) * 0.37f)
                        .abs()
                        .reshape({n, spec.input_shape[0], spec.input_shape[1], spec.input_shape[2]});
  std::string in_path = dir.str(spec.kind + ".f32");
  std::ofstream(in_path, std::ios::binary)
      .write(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * sizeof(float));
  torch::Tensor y;
  {
    torch::NoGradGuard g;
    y = m->forward({x}).toTensor().contiguous();
  }
  std::ostringstream cmd;
  cmd << kPython << " " << SourceDir() << "/tests/learner/interop_load.py " << saved->path << " " << in_path << " "
      << n << " " << spec.input_shape[0] << " " << spec.input_shape[1] << " " << spec.input_shape[2];
  const testing::ProcessResult run = testing::RunCommand(cmd.str());
  const std::string& out = run.output;
  INFO(out);
  REQUIRE(run.exit_code == 0);
  std::istringstream is(out);
  std::vector<double> py;
  std::string tok;
  while (is >> tok && tok != "features") py.push_back(std::stod(tok));
  int64_t width = 0;
  is >> width;
  REQUIRE(static_cast<int64_t>(py.size()) == y.numel());
  const float* cpp = y.data_ptr<float>();
  double max_diff = 0;
  for (size_t i = 0; i < py.size(); ++i) max_diff = std::max(max_diff, std::abs(py[i] - cpp[i]));
  CHECK(max_diff <= 1e-6);
  CHECK(width == spec.hidden.back());
}

TEST_CASE("built-in MLP and CNN load in Python torch.jit.load with identical logits") {
  if (!PythonTorchAvailable()) {
    MESSAGE("SKIPPED: /usr/bin/python3 cannot import torch (install python3-torch); interop not checked");
    return;
  }
  testing::TempDir dir;
  CompareWithPython(ArchSpec{"mlp", {1, 28, 28}, 10, {64}, {}}, dir);
  CompareWithPython(ArchSpec{"cnn", {1, 28, 28}, 10, {32}, {8, 16}}, dir);
}

}  // namespace
}  // namespace distilld::learner
