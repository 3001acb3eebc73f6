// PATCH Tile-mode parameterisation against independent references: the closed form of the binary-concrete sample,
// autograd through a fully materialised mask, brute-force density and budgets, ragged tiles.
#include <gtest/gtest.h>

#include <cmath>

#include "learn/tile_mask.h"

using namespace patchllm;

namespace {

// A random exact 2:4 keep mask [rows, cols] (cols % 4 == 0): 2 of every 4 consecutive inputs.
torch::Tensor random_24(int64_t rows, int64_t cols, uint64_t seed) {
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(seed);
  auto s = torch::rand({rows, cols / 4, 4}, gen);
  auto idx = std::get<1>(s.topk(2, -1));
  return torch::zeros({rows, cols / 4, 4}).scatter_(-1, idx, 1.0).view({rows, cols});
}

}  // namespace

TEST(LearnTile, RaggedGridCountsTrueElements) {
  TileGrid g{172, 64, 32, 24};  // 172 = 5·32 + 12 rows, 64 = 2·24 + 16 cols
  auto n = tile_numel(g);
  EXPECT_EQ(n.sizes(), (std::vector<int64_t>{6, 3}));
  EXPECT_EQ(n.sum().item<float>(), 172 * 64);
  EXPECT_EQ(n[5][2].item<float>(), 12 * 16);
  auto ones = torch::ones({172, 64});
  EXPECT_TRUE(torch::equal(tile_reduce(ones, g), n));
  auto per = torch::arange(18, torch::kFloat32).view({6, 3});
  auto full = tile_expand(per, g);
  EXPECT_EQ(full[171][63].item<float>(), 17);
  EXPECT_EQ(full[31][23].item<float>(), 0);
  EXPECT_EQ(full[32][24].item<float>(), 4);
}

TEST(LearnTile, SampleMatchesClosedForm) {
  // P(t > 0.5) = P(κθ + L > 0) = σ(κθ) exactly, for every τ; mean of the hard sample is the same.
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(7);
  const int64_t n = 200000;
  for (double th : {-0.02, 0.0, 0.01, 0.05}) {
    for (double tau : {4.0, 1.0, 0.05}) {
      const double kappa = 25;
      auto theta = torch::full({n}, th);
      auto t = tile_sample(theta, kappa, tau, false, gen);
      double p = (t > 0.5).to(torch::kDouble).mean().item<double>();
      double expect = 1.0 / (1.0 + std::exp(-kappa * th));
      EXPECT_NEAR(p, expect, 4 * std::sqrt(expect * (1 - expect) / n) + 1e-3) << th << " " << tau;
      auto h = tile_sample(theta, kappa, tau, true, gen);
      EXPECT_NEAR(h.mean().item<double>(), expect, 4 * std::sqrt(expect * (1 - expect) / n) + 1e-3);
    }
  }
  // τ = 1, θ = 0: t = σ(L) is uniform on (0, 1), mean 1/2 and variance 1/12.
  auto t = tile_sample(torch::zeros({n}), 25, 1.0, false, gen);
  EXPECT_NEAR(t.mean().item<double>(), 0.5, 3e-3);
  EXPECT_NEAR(t.var().item<double>(), 1.0 / 12, 2e-3);
}

TEST(LearnTile, StraightThroughForwardHardBackwardSoft) {
  auto theta = torch::randn({4, 5}).requires_grad_(true);
  auto g1 = torch::make_generator<at::CPUGeneratorImpl>(3), g2 = torch::make_generator<at::CPUGeneratorImpl>(3);
  auto hard = tile_sample(theta, 10, 0.5, true, g1);
  auto soft = tile_sample(theta, 10, 0.5, false, g2);
  EXPECT_TRUE(((hard == 0) | (hard == 1)).all().item<bool>());
  EXPECT_TRUE(torch::equal(hard, (soft > 0.5).to(torch::kFloat32)));
  auto w = torch::randn({4, 5});
  auto ga = torch::autograd::grad({(hard * w).sum()}, {theta})[0];
  auto gb = torch::autograd::grad({(soft * w).sum()}, {theta})[0];
  EXPECT_TRUE(torch::allclose(ga, gb));
}

TEST(LearnTile, AnalyticDensityEqualsMaterialisedMaskMean) {
  TileGrid g{70, 44, 16, 12};  // ragged both ways
  auto m24 = random_24(70, 44, 1);
  auto t = torch::rand({g.grid_r(), g.grid_c()});
  auto full = tile_expand(t, g);
  double brute = (full + (1 - full) * m24).mean().item<double>();
  double analytic = 0.5 + 0.5 * (t * tile_numel(g)).sum().item<double>() / (70.0 * 44.0);
  EXPECT_NEAR(analytic, brute, 1e-6);
}

TEST(LearnTile, TileGradientEqualsAutogradThroughMaterialisedMask) {
  TileGrid g{40, 24, 16, 8};  // ragged rows
  torch::manual_seed(5);
  auto W = torch::randn({40, 24}, torch::kDouble), b = torch::randn({40}, torch::kDouble);
  auto m24 = random_24(40, 24, 2).to(torch::kDouble);
  auto x = torch::randn({3, 7, 24}, torch::kDouble);
  auto t0 = torch::rand({g.grid_r(), g.grid_c()}, torch::kDouble);
  // Ours.
  auto t1 = t0.clone().requires_grad_(true), x1 = x.clone().requires_grad_(true);
  auto kept = W * m24, pruned = W * (1 - m24);
  auto y1 = tile_linear(x1, t1, kept, pruned, b, g);
  auto gy = torch::randn_like(y1);
  (y1 * gy).sum().backward();
  // Reference: the full mask M = T + (1 - T) ⊙ M24 materialised, plain autograd.
  auto t2 = t0.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
  auto T = tile_expand(t2, g);
  auto y2 = torch::linear(x2, W * (T + (1 - T) * m24), b);
  (y2 * gy).sum().backward();
  EXPECT_TRUE(torch::allclose(y1, y2, 1e-10, 1e-10));
  EXPECT_TRUE(torch::allclose(t1.grad(), t2.grad(), 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(x1.grad(), x2.grad(), 1e-9, 1e-9));
}

TEST(LearnTile, ExactBudgetSelectsTopTilesWithinOneTile) {
  std::vector<TileGrid> grids = {{64, 64, 16, 16}, {40, 64, 16, 16}};  // second one ragged (rows 16,16,8)
  std::vector<torch::Tensor> thetas = {torch::randn({4, 4}), torch::randn({3, 4})};
  double total = 64 * 64 + 40 * 64;
  for (double s : {0.0, 0.1, 0.25, 0.35, 0.45, 0.5}) {
    auto sel = tile_select_exact(thetas, grids, s);
    double dense = 0, min_in = 1e9, max_out = -1e9;
    for (size_t m = 0; m < 2; ++m) {
      auto ne = tile_numel(grids[m]);
      dense += (ne * sel[m].to(torch::kFloat32)).sum().item<double>();
      if (sel[m].any().item<bool>()) min_in = std::min(min_in, thetas[m].masked_select(sel[m]).min().item<double>());
      if ((~sel[m]).any().item<bool>())
        max_out = std::max(max_out, thetas[m].masked_select(~sel[m]).max().item<double>());
    }
    double achieved = 0.5 * (1 - dense / total);
    EXPECT_LE(std::abs(dense - (1 - 2 * s) * total), 256.0) << "s=" << s;  // within one (largest) tile
    EXPECT_NEAR(achieved, s, 256.0 / total / 2 + 1e-12);
    if (min_in < 1e9 && max_out > -1e9) EXPECT_GE(min_in, max_out) << "dense tiles must be the top-theta ones";
  }
  EXPECT_THROW(tile_select_exact(thetas, grids, 0.6), std::exception);
}

#include "learn/patch_learn.h"
#include "prune/prune.h"
#include "test_util.h"
#include "tiny_model.h"

// End to end on a tiny random model: the loop runs, the density regulariser pulls the soft density towards d*, and
// the exact-budget mask is a valid hybrid mask at the target sparsity to within one tile.
TEST(LearnTile, LearnLoopHitsBudgetWithValidHybridMask) {
  test::TinySpec s;
  s.hidden = 64;
  s.inter = 96;
  auto dir = test::tiny_model_write(test::temp_dir("learn"), s);
  auto model = Model::load(dir);
  MaskSet prior;
  for (auto& [name, slot] : model->linears()) {
    LinearMask lm;
    lm.keep = prune_magnitude((*slot)->weight, "2:4", 0.5);
    lm.tile_map = mask_tile_map_full((*slot)->weight.size(0), (*slot)->weight.size(1), 16, 16);
    lm.tile_scores = mask_tile_density(prune_magnitude((*slot)->weight, "unstructured", 0.35), 16, 16);
    prior.masks[name] = lm;
  }
  LearnOptions o;
  o.target_sparsity = 0.35;
  o.tile_r = o.tile_c = 16;
  o.steps = 12;
  o.seqlen = 16;
  o.micro_batch = 2;
  auto train = torch::randint(3, s.vocab, {8, 16}, torch::kLong);
  auto before = model->forward(train.narrow(0, 0, 1));
  auto r = patch_learn_tile(*model, prior, train, o);
  ASSERT_EQ(r.history.size(), 12u);
  double d_first = r.history.front()["density"], d_last = r.history.back()["density"];
  EXPECT_LT(std::abs(d_last - 0.65), std::abs(d_first - 0.65) + 0.02);
  EXPECT_NEAR(r.achieved_sparsity, 0.35, 0.5 * 256.0 / r.masks.total() + 1e-9);  // within one 16x16 tile
  for (const auto& [name, lm] : r.masks.masks) mask_validate_24(lm.keep, lm.tile_map, 16, 16, name);
  // Slots restored: the model computes exactly as before.
  EXPECT_TRUE(torch::equal(model->forward(train.narrow(0, 0, 1)), before));
}
