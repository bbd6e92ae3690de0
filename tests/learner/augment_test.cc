// Tests for learner/augment.h: shifted views of image batches.
#include "tests/learner/torch_doctest.h"

#include <random>
#include <set>
#include <utility>

#include "learner/augment.h"

namespace distilld::learner {
namespace {

// One bright pixel at (r, c) on a zero background, per row.
torch::Tensor Dots(int64_t n, int64_t h, int64_t w, int64_t r, int64_t c) {
  torch::Tensor x = torch::zeros({n, 1, h, w});
  x.index_put_({torch::indexing::Slice(), 0, r, c}, 1.0);
  return x;
}

// The (dy, dx) that moved row i's single bright pixel away from (r, c).
std::pair<int64_t, int64_t> Moved(const torch::Tensor& views, int64_t i, int64_t r, int64_t c) {
  torch::Tensor at = views[i].reshape({views.size(-2), views.size(-1)}).eq(1.0).nonzero();
  REQUIRE(at.size(0) == 1);
  return {at[0][0].item<int64_t>() - r, at[0][1].item<int64_t>() - c};
}

TEST_CASE("shifted views move each image by its own offset within max_shift, keeping its pixels") {
  std::mt19937_64 rng(3);
  const torch::Tensor dots = Dots(400, 9, 7, 4, 3);
  auto views = AugmentImages(dots, ImageAugmentOptions{2}, rng);
  REQUIRE(views.ok());
  CHECK(views->sizes() == dots.sizes());
  std::set<std::pair<int64_t, int64_t>> offsets;
  for (int64_t i = 0; i < dots.size(0); ++i) {
    auto [dy, dx] = Moved(*views, i, 4, 3);
    CHECK(std::abs(dy) <= 2);
    CHECK(std::abs(dx) <= 2);
    offsets.insert({dy, dx});
  }
  // 400 draws from 25 equally likely offsets: all of them appear.
  CHECK(offsets.size() == 25);
  // The dot is the only non-zero pixel: the background is replicated, not
  // invented, and nothing else changed.
  CHECK(views->sum().item<double>() == doctest::Approx(400.0));
  // The input is untouched.
  CHECK(torch::equal(dots, Dots(400, 9, 7, 4, 3)));
}

TEST_CASE("uncovered borders repeat the edge pixels") {
  std::mt19937_64 rng(1);
  // Rows of constant value v_r: a vertical shift by dy repeats the top or
  // bottom row; every value in the view is one of the original rows'.
  torch::Tensor ramp = torch::arange(5, torch::kFloat32).reshape({1, 1, 5, 1}).expand({64, 1, 5, 4}).contiguous();
  auto views = AugmentImages(ramp, ImageAugmentOptions{1}, rng);
  REQUIRE(views.ok());
  bool saw_repeat = false;
  for (int64_t i = 0; i < 64; ++i) {
    torch::Tensor col = (*views)[i][0].select(1, 0);
    CHECK(col.min().item<float>() >= 0.0f);
    CHECK(col.max().item<float>() <= 4.0f);
    // Consecutive rows differ by 0 (repeated edge) or 1 (the ramp).
    torch::Tensor d = col.slice(0, 1) - col.slice(0, 0, 4);
    CHECK(d.ge(0).all().item<bool>());
    CHECK(d.le(1).all().item<bool>());
    saw_repeat |= d.eq(0).any().item<bool>();
  }
  CHECK(saw_repeat);
}

TEST_CASE("views depend only on the generator's state; max_shift 0 returns the images") {
  const torch::Tensor x = torch::rand({50, 3, 6, 6});
  std::mt19937_64 a(9), b(9);
  auto va = AugmentImages(x, ImageAugmentOptions{1}, a);
  auto vb = AugmentImages(x, ImageAugmentOptions{1}, b);
  REQUIRE(va.ok());
  REQUIRE(vb.ok());
  CHECK(torch::equal(*va, *vb));
  CHECK_FALSE(torch::equal(*va, x));
  std::mt19937_64 c(9);
  auto same = AugmentImages(x, ImageAugmentOptions{0}, c);
  REQUIRE(same.ok());
  CHECK(torch::equal(*same, x));
  // Channels of one image move together.
  std::mt19937_64 d(4);
  torch::Tensor two = torch::cat({Dots(30, 8, 8, 3, 3), Dots(30, 8, 8, 3, 3)}, 1);
  auto vt = AugmentImages(two, ImageAugmentOptions{2}, d);
  REQUIRE(vt.ok());
  CHECK(torch::equal(vt->select(1, 0), vt->select(1, 1)));
}

TEST_CASE("flat, integer or too small inputs are refused with a reason") {
  std::mt19937_64 rng(1);
  auto flat = AugmentImages(torch::zeros({4, 784}), ImageAugmentOptions{1}, rng);
  REQUIRE_FALSE(flat.ok());
  CHECK(flat.status().message().find("[..., H, W]") != std::string::npos);
  auto ints = AugmentImages(torch::zeros({4, 1, 8, 8}, torch::kInt64), ImageAugmentOptions{1}, rng);
  REQUIRE_FALSE(ints.ok());
  CHECK(ints.status().message().find("floating") != std::string::npos);
  auto big = AugmentImages(torch::zeros({4, 1, 3, 8}), ImageAugmentOptions{3}, rng);
  REQUIRE_FALSE(big.ok());
  CHECK(big.status().message().find("max_shift") != std::string::npos);
  auto negative = AugmentImages(torch::zeros({4, 1, 8, 8}), ImageAugmentOptions{-1}, rng);
  CHECK_FALSE(negative.ok());
}

}  // namespace
}  // namespace distilld::learner
