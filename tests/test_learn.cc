// PATCH Tile-mode parameterisation against independent references: the closed form of the binary-concrete sample,
// autograd through a fully materialised mask, brute-force density and budgets, ragged tiles.
#include <gtest/gtest.h>

#include <cmath>

#include "learn/tile_mask.h"
#include "torch_test_util.h"

using namespace patchllm;

using test::random_24;

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
  uint64_t seed = 7;
  const int64_t n = 200000;
  for (double th : {-0.02, 0.0, 0.01, 0.05}) {
    for (double tau : {4.0, 1.0, 0.05}) {
      const double kappa = 25;
      auto theta = torch::full({n}, th);
      auto t = tile_sample(theta, kappa, tau, false, seed++);
      double p = (t > 0.5).to(torch::kDouble).mean().item<double>();
      double expect = 1.0 / (1.0 + std::exp(-kappa * th));
      EXPECT_NEAR(p, expect, 4 * std::sqrt(expect * (1 - expect) / n) + 1e-3) << th << " " << tau;
      auto h = tile_sample(theta, kappa, tau, true, seed++);
      EXPECT_NEAR(h.mean().item<double>(), expect, 4 * std::sqrt(expect * (1 - expect) / n) + 1e-3);
    }
  }
  // τ = 1, θ = 0: t = σ(L) is uniform on (0, 1), mean 1/2 and variance 1/12.
  auto t = tile_sample(torch::zeros({n}), 25, 1.0, false, seed++);
  EXPECT_NEAR(t.mean().item<double>(), 0.5, 3e-3);
  EXPECT_NEAR(t.var().item<double>(), 1.0 / 12, 2e-3);
}

TEST(LearnTile, StraightThroughForwardHardBackwardSoft) {
  auto theta = torch::randn({4, 5}).requires_grad_(true);
  auto hard = tile_sample(theta, 10, 0.5, true, 3);  // same seed, same noise
  auto soft = tile_sample(theta, 10, 0.5, false, 3);
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
  auto y1 = tile_linear(x1, t1, W, m24 > 0.5, b, g);
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
  // The variant that keeps W_eff for backward (used inside checkpointed layers) gives the same gradients.
  auto t3 = t0.clone().requires_grad_(true), x3 = x.clone().requires_grad_(true);
  (tile_linear(x3, t3, W, m24 > 0.5, b, g, /*save_weff=*/true) * gy).sum().backward();
  EXPECT_TRUE(torch::allclose(t3.grad(), t2.grad(), 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(x3.grad(), x2.grad(), 1e-9, 1e-9));
}

TEST(LearnTile, TileScaleEqualsExpandedProduct) {
  for (TileGrid g : {TileGrid{64, 48, 16, 16}, TileGrid{70, 44, 16, 12}}) {  // divisible, ragged
    auto w = torch::randn({g.rows, g.cols});
    auto t = torch::rand({g.grid_r(), g.grid_c()});
    EXPECT_TRUE(torch::allclose(tile_scale(w, t, g), w * tile_expand(t, g)));
    EXPECT_TRUE(torch::allclose(tile_reduce(w, g, torch::kDouble).to(torch::kFloat32), tile_reduce(w, g), 1e-5, 1e-5));
  }
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
  auto r = patch_learn(*model, prior, train, o);
  ASSERT_EQ(r.history.size(), 12u);
  double d_first = r.history.front()["density"], d_last = r.history.back()["density"];
  EXPECT_LT(std::abs(d_last - 0.65), std::abs(d_first - 0.65) + 0.02);
  EXPECT_NEAR(r.achieved_sparsity, 0.35, 0.5 * 256.0 / r.masks.total() + 1e-9);  // within one 16x16 tile
  for (const auto& [name, lm] : r.masks.masks) mask_validate_24(lm.keep, lm.tile_map, 16, 16, name);
  // Slots restored: the model computes exactly as before.
  EXPECT_TRUE(torch::equal(model->forward(train.narrow(0, 0, 1)), before));
}

// ---------------------------------------------------------------------------------------------------------------
// Joint mode (2:4 pattern logits), checkpointing, resume.
#include <algorithm>

#include "core/error.h"
#include "core/file.h"
#include "learn/checkpoint.h"
#include "learn/noise.h"
#include "learn/pattern_mask.h"

TEST(LearnJoint, PatternPriorMatchesOverlapRule) {
  // Row of 8 = two groups: keep {0,1} (candidate 1100) and {5,7} (positions 1,3 of group 2: candidate 0101).
  auto keep = torch::tensor({1, 1, 0, 0, 0, 1, 0, 1}, torch::kFloat32).view({1, 8}) > 0.5;
  auto gen = at::detail::createCPUGenerator(0);
  auto phi = pattern_prior_logits(keep, 0.014, 3.0, 0.0, gen);
  const float a = 0.042f;
  // Hand-computed overlaps for 1100: with 1100 2, 1010 1, 1001 1, 0110 1, 0101 1, 0011 0.
  auto e0 = torch::tensor({a, 0.f, 0.f, 0.f, 0.f, -a});
  // 0101: with 1100 1, 1010 0, 1001 1, 0110 1, 0101 2, 0011 1.
  auto e1 = torch::tensor({0.f, -a, 0.f, 0.f, a, 0.f});
  EXPECT_TRUE(torch::allclose(phi[0], e0, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(phi[1], e1, 1e-6, 1e-7));
  EXPECT_TRUE(torch::equal(pattern_argmax_keep(phi, 1, 8), keep));
}

TEST(LearnJoint, GumbelSampleMatchesSoftmaxProbabilities) {
  // Gumbel-max: P(argmax_i (κφ_i + g_i)/τ = k) = softmax(κφ)_k for every τ; the hard sample's mean is that.
  const int64_t G = 100000;
  auto row = torch::tensor({0.01f, -0.02f, 0.0f, 0.03f, -0.01f, 0.005f});
  auto phi = row.repeat({G, 1});
  const double kappa = 50;
  auto p = torch::softmax(row * kappa, 0);
  uint64_t seed = 11;
  for (double tau : {4.0, 0.5}) {
    auto h = pattern_sample(phi, kappa, tau, true, seed++);
    EXPECT_TRUE(torch::allclose(h.sum(-1), torch::ones({G})));
    auto freq = h.mean(0);
    for (int i = 0; i < 6; ++i) {
      double pi = p[i].item<double>();
      EXPECT_NEAR(freq[i].item<double>(), pi, 4 * std::sqrt(pi * (1 - pi) / G)) << "tau " << tau << " i " << i;
    }
  }
  // Soft samples are on the simplex and the soft 2:4 mask keeps exactly 2 per group in expectation and per sample.
  auto y = pattern_sample(phi.narrow(0, 0, 64), kappa, 1.0, false, 99);
  auto m = pattern_mask(y, 8, 32);
  EXPECT_TRUE(torch::allclose(m.view({-1, 4}).sum(-1), torch::full({64}, 2.0f), 1e-5, 1e-5));
}

TEST(LearnJoint, LinearForwardAndGradientsMatchReference) {
  // JointMaskedLinear against a plain per-element materialisation, and its gradients (φ, t, x) against central
  // finite differences in float64.
  TileGrid g{12, 24, 8, 16};  // ragged both ways
  auto W = torch::randn({12, 24}, torch::kFloat64);
  Linear base(W);
  JointMaskedLinear jl(base, g);
  auto phi = (torch::randn({12 * 24 / 4, 6}, torch::kFloat64) * 0.02).requires_grad_(true);
  auto t = torch::rand({2, 2}, torch::kFloat64).requires_grad_(true);
  auto x = torch::randn({3, 24}, torch::kFloat64).requires_grad_(true);
  jl.phi = phi;
  jl.t = t;
  jl.kappa = 30;
  jl.tau = 0.7;
  jl.noise_seed = 1234;
  jl.want_norm = true;
  auto y = jl.forward(x);
  // Reference: same noise (public seeded draw), explicit Gumbel-softmax and per-element mask.
  auto u = noise_uniform({72, 6}, 1234, torch::kCPU, 1e-10, 1.0);
  auto gum = (-torch::log(-torch::log(u))).to(torch::kFloat64);  // the noise is an fp32 input, as in the module
  auto z = (phi.detach() * 30 + gum) / 0.7;
  auto prob = torch::exp(z - std::get<0>(z.max(-1, true)));
  prob = prob / prob.sum(-1, true);
  auto C = pattern_candidates().to(torch::kFloat64);
  auto M = torch::empty({12, 24}, torch::kFloat64);
  for (int64_t r = 0; r < 12; ++r)
    for (int64_t c = 0; c < 24; ++c) {
      double tt = t[r / 8][c / 16].item<double>(), m24 = 0;
      for (int i = 0; i < 6; ++i) m24 += prob[(r * 24 + c) / 4][i].item<double>() * C[i][c % 4].item<double>();
      M[r][c] = tt + (1 - tt) * m24;
    }
  EXPECT_LT((y - torch::matmul(x.detach(), (W * M).t())).abs().max().item<double>(), 1e-9);
  EXPECT_NEAR(jl.last_norm.item<double>(), (W * M).norm().item<double>(), 1e-6);
  // Gradients of L = Σ y ⊙ R + ‖M ⊙ W‖ against finite differences.
  auto R = torch::randn({3, 12}, torch::kFloat64);
  auto loss_of = [&](const torch::Tensor& ph, const torch::Tensor& tt, const torch::Tensor& xx) {
    jl.phi = ph;
    jl.t = tt;
    auto out = jl.forward(xx);
    return (out * R).sum() + jl.last_norm;
  };
  auto grads = torch::autograd::grad({loss_of(phi, t, x)}, {phi, t, x});
  const double eps = 1e-6;
  auto fd = [&](int which, int64_t flat) {
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> v = {phi.detach().clone(), t.detach().clone(), x.detach().clone()};
    v[which].view({-1})[flat] += eps;
    double lp = loss_of(v[0], v[1], v[2]).item<double>();
    v[which].view({-1})[flat] -= 2 * eps;
    double lm = loss_of(v[0], v[1], v[2]).item<double>();
    return (lp - lm) / (2 * eps);
  };
  for (int which = 0; which < 3; ++which)
    for (int64_t flat : {int64_t(0), grads[which].numel() / 2, grads[which].numel() - 1}) {
      double a = grads[which].view({-1})[flat].item<double>(), b = fd(which, flat);
      EXPECT_NEAR(a, b, 1e-5 * std::max(1.0, std::abs(b))) << "input " << which << " element " << flat;
    }
}

TEST(LearnCheckpoint, GradientsEqualPlainBackward) {
  auto w = torch::randn({8, 8});
  auto h = torch::randn({2, 8}).requires_grad_(true);
  auto e = torch::randn({8}).requires_grad_(true);
  auto f = [&](const torch::Tensor& hin, const std::vector<torch::Tensor>& ex) {
    auto out = torch::tanh(torch::matmul(hin, w) * ex[0]);
    return std::vector<torch::Tensor>{out, (out * ex[0]).sum()};
  };
  auto plain = f(h, {e});
  auto ga = torch::autograd::grad({plain[0].square().sum() + 3 * plain[1]}, {h, e});
  auto ck = checkpoint(f, h, {e});
  EXPECT_TRUE(torch::allclose(ck[0], plain[0]));
  auto gb = torch::autograd::grad({ck[0].square().sum() + 3 * ck[1]}, {h, e});
  EXPECT_TRUE(torch::allclose(ga[0], gb[0], 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(ga[1], gb[1], 1e-6, 1e-7));
}

namespace {

struct TinyLearnSetup {
  std::unique_ptr<Model> model;
  MaskSet prior;
  torch::Tensor train;
};

TinyLearnSetup tiny_learn_setup(const std::string& tag, int64_t tile, double s) {
  test::TinySpec spec;
  spec.hidden = 64;
  spec.inter = 96;
  auto dir = test::tiny_model_write(test::temp_dir(tag), spec);
  TinyLearnSetup r;
  r.model = Model::load(dir);
  for (auto& [name, slot] : r.model->linears()) {
    LinearMask lm;
    lm.keep = prune_magnitude((*slot)->weight, "2:4", 0.5);
    lm.tile_map = mask_tile_map_full((*slot)->weight.size(0), (*slot)->weight.size(1), tile, tile);
    lm.tile_scores = mask_tile_density(prune_magnitude((*slot)->weight, "unstructured", s), tile, tile);
    r.prior.masks[name] = lm;
  }
  r.train = torch::randint(3, spec.vocab, {8, 16}, at::detail::createCPUGenerator(5), torch::kLong);
  return r;
}

LearnOptions tiny_options(const std::string& method) {
  LearnOptions o;
  o.method = method;
  o.target_sparsity = 0.35;
  o.tile_r = o.tile_c = 16;
  o.steps = 6;
  o.seqlen = 16;
  o.micro_batch = 2;
  o.grad_accum = 2;
  return o;
}

void expect_same_logits(const LearnResult& a, const LearnResult& b) {
  for (const auto& [n, th] : a.thetas) EXPECT_TRUE(torch::equal(th, b.thetas.at(n))) << n;
  for (const auto& [n, ph] : a.phis) EXPECT_TRUE(torch::equal(ph, b.phis.at(n))) << n;
}

}  // namespace

TEST(LearnJoint, JointLoopGivesValidHybridMaskAtBudget) {
  auto s = tiny_learn_setup("joint", 16, 0.35);
  auto o = tiny_options("patch-joint");
  auto r = patch_learn(*s.model, s.prior, s.train, o);
  ASSERT_TRUE(r.finished);
  EXPECT_NEAR(r.achieved_sparsity, 0.35, 0.5 * 256.0 / r.masks.total() + 1e-9);
  for (const auto& [name, lm] : r.masks.masks) mask_validate_24(lm.keep, lm.tile_map, 16, 16, name);
  // The 2:4 logits moved (they are learned), unlike patch-tile where the pattern is the prior's.
  EXPECT_EQ(r.phis.size(), 14u);
}

TEST(LearnJoint, MaskLLMGivesPure24) {
  auto s = tiny_learn_setup("maskllm", 16, 0.35);
  auto o = tiny_options("maskllm");
  auto r = patch_learn(*s.model, s.prior, s.train, o);
  ASSERT_TRUE(r.finished);
  EXPECT_DOUBLE_EQ(r.achieved_sparsity, 0.5);
  EXPECT_TRUE(r.thetas.empty());
  for (const auto& [name, lm] : r.masks.masks) mask_validate_24(lm.keep, lm.tile_map, 16, 16, name);
}

TEST(LearnCheckpoint, CheckpointedTrainingEqualsPlainTraining) {
  for (std::string method : {"patch-tile", "patch-joint"}) {
    auto s = tiny_learn_setup("ckpt", 16, 0.35);
    auto o = tiny_options(method);
    o.steps = 3;
    auto plain = patch_learn(*s.model, s.prior, s.train, o);
    o.checkpoint_layers = true;
    // {ce_chunk, keep_layers}: loss over the whole sequence; in chunks of 4 of 15 positions; the last of the two
    // layers not recomputed.
    for (auto [chunk, keep] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {4, 0}, {0, 1}}) {
      o.ce_chunk = chunk;
      o.keep_layers = keep;
      auto ck = patch_learn(*s.model, s.prior, s.train, o);
      // Chunks sum the loss in another order: gradients differ by float rounding, which Adam's normalisation turns
      // into update differences on logits near zero after 3 steps: up to 2e-6 measured on one CPU, 8e-6 on an AVX2
      // EPYC (other OpenBLAS kernels), hence the looser atol. Still 1/30 of one Adam step (lr 6e-4), which a wrong
      // gradient moves.
      const double atol = chunk ? 2e-5 : 1e-6;
      for (const auto& [n, th] : plain.thetas)
        EXPECT_TRUE(torch::allclose(th, ck.thetas.at(n), 1e-5, atol)) << n << " chunk " << chunk << " keep " << keep;
      for (const auto& [n, ph] : plain.phis)
        EXPECT_TRUE(torch::allclose(ph, ck.phis.at(n), 1e-5, atol))
            << n << " chunk " << chunk << " keep " << keep << " max diff "
            << (ph - ck.phis.at(n)).abs().max().item<double>();
      EXPECT_NEAR(plain.history.back()["ce"].get<double>(), ck.history.back()["ce"].get<double>(), 1e-5);
    }
  }
}

// The reference design (full-size masks M = T + (1 − T) ⊙ M24 built per matrix, the weight regulariser as
// ‖W ⊙ M‖_F of the materialised mask) against ours (one flat tile-logit tensor, per-matrix sums of the analytic
// per-tile norms, per-layer density sums by segment): the same trajectory up to float rounding.
TEST(LearnCheckpoint, ReferenceDesignFollowsTheSameTrajectory) {
  for (std::string method : {"patch-tile", "patch-joint"}) {
    for (bool per_layer : {false, true}) {
      auto s = tiny_learn_setup("refdesign", 16, 0.35);
      auto o = tiny_options(method);
      o.steps = 3;
      o.per_layer = per_layer;
      o.weight_reg = 10;
      auto ours = patch_learn(*s.model, s.prior, s.train, o);
      o.materialise_masks = true;
      auto ref = patch_learn(*s.model, s.prior, s.train, o);
      const std::string what = method + (per_layer ? " per layer" : " global");
      for (const auto& [n, th] : ref.thetas)
        EXPECT_TRUE(torch::allclose(ours.thetas.at(n), th, 1e-5, 5e-6))
            << what << " " << n << " max diff " << (th - ours.thetas.at(n)).abs().max().item<double>();
      for (const auto& [n, ph] : ref.phis) EXPECT_TRUE(torch::allclose(ours.phis.at(n), ph, 1e-5, 5e-6)) << what << n;
      for (const char* k : {"ce", "density", "weight_reg_term"})
        EXPECT_NEAR(ours.history.back()[k].get<double>(), ref.history.back()[k].get<double>(), 1e-5) << what << k;
      EXPECT_GT(ref.history.back()["weight_reg_term"].get<double>(), 0.1) << what;  // the term is there at all
      EXPECT_EQ(ours.thetas.size(), 14u);
    }
  }
}

// The chunked LM-head loss against a float64 log-softmax of the whole sequence's logits: value and gradient.
TEST(LearnCheckpoint, ChunkedLossEqualsWholeSequenceInFloat64) {
  auto s = tiny_learn_setup("cechunk", 16, 0.35);
  auto x = s.train.narrow(0, 0, 2);
  auto h0 = s.model->hidden(x).detach();
  // Reference: the whole sequence's fp32 logits, their log-softmax and mean in float64, gradient by autograd.
  auto h = h0.clone().requires_grad_(true);
  auto logits = s.model->head(h.narrow(1, 0, x.size(1) - 1));
  auto lp = torch::log_softmax(logits.to(torch::kFloat64), -1);
  auto ref = -lp.gather(-1, x.narrow(1, 1, x.size(1) - 1).unsqueeze(-1)).mean();
  auto g_ref = torch::autograd::grad({ref}, {h})[0];
  for (int64_t chunk : {int64_t(0), int64_t(1), int64_t(4), int64_t(6), int64_t(100)}) {
    auto hc = h0.clone().requires_grad_(true);
    auto ce = next_token_ce(*s.model, hc, x, chunk);
    EXPECT_NEAR(ce.item<double>(), ref.item<double>(), 1e-5) << "chunk " << chunk;
    auto g = torch::autograd::grad({ce}, {hc})[0];
    EXPECT_TRUE(torch::allclose(g, g_ref, 1e-4, 1e-7)) << "chunk " << chunk;
  }
}

TEST(LearnResume, StopAndResumeEqualsUninterrupted) {
  for (std::string method : {"patch-tile", "patch-joint"}) {
    auto s = tiny_learn_setup("resume", 16, 0.35);
    auto o = tiny_options(method);
    auto full = patch_learn(*s.model, s.prior, s.train, o);
    auto dir = test::temp_dir("resume-state");
    o.state_path = dir + "/state.safetensors";
    o.checkpoint_every = 2;
    o.stop_after = 3;  // stops between checkpoints: the state saved at the stop is what counts
    auto part = patch_learn(*s.model, s.prior, s.train, o);
    EXPECT_FALSE(part.finished);
    o.stop_after = -1;
    o.resume = true;
    auto rest = patch_learn(*s.model, s.prior, s.train, o);
    ASSERT_TRUE(rest.finished);
    EXPECT_EQ(rest.history.front()["step"].get<int>(), 4);
    expect_same_logits(full, rest);
    for (const auto& [n, lm] : full.masks.masks) EXPECT_TRUE(torch::equal(lm.keep, rest.masks.masks.at(n).keep)) << n;
    // A resume with different settings is refused.
    o.lr = 2e-3;
    EXPECT_THROW(patch_learn(*s.model, s.prior, s.train, o), InvalidArgument);
  }
}

// A damaged state file (cut short, its middle overwritten, empty, values altered in place with the layout intact) or
// a foreign one stops a resume with one line naming the file, and changes nothing: the good state then resumes.
// A LibTorch archive in particular is refused, never parsed: LibTorch's archive reader, which read the first state
// format, crashed (SEGV in its type parser) on a damaged file within 500 inputs of fuzz_learn_state.
TEST(LearnResume, DamagedStateGivesOneLineFormatError) {
  auto s = tiny_learn_setup("damaged", 16, 0.35);
  auto o = tiny_options("patch-joint");
  auto dir = test::temp_dir("damaged-state");
  o.state_path = dir + "/state.safetensors";
  o.stop_after = 2;
  ASSERT_FALSE(patch_learn(*s.model, s.prior, s.train, o).finished);
  const std::string good = file_read(o.state_path);
  ASSERT_GT(good.size(), 4096u);
  std::string middle = good;
  std::fill(middle.begin() + middle.size() / 4, middle.begin() + 3 * middle.size() / 4, '\0');
  std::string flipped = good;  // the last 4 bytes of the data section: a tensor value
  for (size_t i = flipped.size() - 4; i < flipped.size(); ++i) flipped[i] = char(~flipped[i]);
  torch::serialize::OutputArchive ar;
  ar.write("step", c10::IValue(int64_t(2)));
  ar.write("theta.0", torch::zeros({4, 4}));
  ar.save_to(dir + "/archive.pt");
  o.stop_after = -1;
  o.resume = true;
  const std::pair<std::string, std::string> cases[] = {{good.substr(0, good.size() / 2), "safetensors"},
                                                        {middle, ""},  // the layout or the checksum
                                                        {std::string(), "safetensors"},
                                                        {flipped, "sha256"},
                                                        {file_read(dir + "/archive.pt"), "safetensors"}};
  for (const auto& [bad, why] : cases) {
    file_write_atomic(o.state_path, bad);
    try {
      patch_learn(*s.model, s.prior, s.train, o);
      ADD_FAILURE() << "a damaged state of " << bad.size() << " bytes was accepted";
    } catch (const FormatError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(o.state_path), std::string::npos) << m;
      EXPECT_NE(m.find(why), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
  file_write_atomic(o.state_path, good);
  EXPECT_TRUE(patch_learn(*s.model, s.prior, s.train, o).finished);
}

TEST(LearnTile, PerLayerBudgetHoldsInEveryLayer) {
  auto s = tiny_learn_setup("perlayer", 16, 0.35);
  auto o = tiny_options("patch-tile");
  o.per_layer = true;
  auto r = patch_learn(*s.model, s.prior, s.train, o);
  ASSERT_TRUE(r.finished);
  std::map<int, std::pair<double, double>> layer;  // kept, total
  for (const auto& [name, lm] : r.masks.masks) {
    int l = std::stoi(name.substr(std::string("model.layers.").size()));
    layer[l].first += lm.keep.sum().item<double>();
    layer[l].second += lm.keep.numel();
  }
  for (const auto& [l, kt] : layer) EXPECT_NEAR(1 - kt.first / kt.second, 0.35, 0.5 * 256.0 / kt.second + 1e-9) << l;
}

// ---------------------------------------------------------------------------------------------------------------
// The CLI front (`prune --method patch-*`) on the real stories260K: outputs, kill/resume, and bad input.
#include "core/file.h"

namespace {

int count_lines(const std::string& path) {
  auto s = file_read(path);
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

bool one_line_error(const test::CliResult& r, const std::string& needle) {
  auto e = r.err;
  while (!e.empty() && e.back() == '\n') e.pop_back();
  return r.code != 0 && e.find('\n') == std::string::npos && e.find(needle) != std::string::npos;
}

}  // namespace

TEST(LearnCli, JointRunResumesAndRejectsBadInput) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string train = test::shared_dir() + "/data/tinystories/train.txt";
  std::string tmp = test::temp_dir("learn_cli");
  std::string hf = test::stories260k_hf(shared);
  ASSERT_FALSE(hf.empty());
  test::CliResult r;
  const std::string base = "-q prune -m '" + hf + "' --method patch-joint --sparsity 0.35 --tile 16x16 -f '" + train +
                           "' --nsamples 4 --seqlen 64 --steps 4 --micro-batch 2 --train-seqlen 64 -o '" + tmp + "/o'";
  r = test::run_cli(base + " --stop-after 2");  // as if killed after step 2
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(file_exists(tmp + "/o/masks.safetensors"));
  EXPECT_TRUE(file_exists(tmp + "/o/learn_state.safetensors"));
  EXPECT_EQ(count_lines(tmp + "/o/train_log.jsonl"), 2);
  r = test::run_cli(base + " --resume --export");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count_lines(tmp + "/o/train_log.jsonl"), 4);  // every step once
  MaskSet ms = mask_load(tmp + "/o/masks.safetensors");
  EXPECT_EQ(ms.meta.at("method"), "patch-joint");
  EXPECT_NEAR(ms.sparsity(), 0.35, 0.01);
  for (const auto& [name, lm] : ms.masks) mask_validate_24(lm.keep, lm.tile_map, 16, 16, name);
  EXPECT_TRUE(file_exists(tmp + "/o/patch_config.json"));
  EXPECT_TRUE(file_exists(tmp + "/o/learn_report.json"));
  EXPECT_TRUE(file_exists(tmp + "/o/hf/model.safetensors"));
  // An uninterrupted run with the same seed ends with the same mask.
  r = test::run_cli("-q prune -m '" + hf + "' --method patch-joint --sparsity 0.35 --tile 16x16 -f '" + train +
                    "' --nsamples 4 --seqlen 64 --steps 4 --micro-batch 2 --train-seqlen 64 -o '" + tmp + "/full'");
  ASSERT_EQ(r.code, 0) << r.err;
  MaskSet full = mask_load(tmp + "/full/masks.safetensors");
  for (const auto& [name, lm] : full.masks) EXPECT_TRUE(torch::equal(lm.keep, ms.masks.at(name).keep)) << name;

  // Bad input: one line, non-zero exit, nothing half-written.
  const std::string pre = "-q prune -m '" + hf + "' --method patch-tile -f '" + train + "' -o '" + tmp + "/bad'";
  EXPECT_TRUE(one_line_error(test::run_cli(pre + " --sparsity 0.6"), "outside [0, 0.5]"));
  EXPECT_TRUE(one_line_error(test::run_cli(pre + " --sparsity 0.3 --tile 16x30"), "multiple of 4"));
  file_write_atomic(tmp + "/empty.txt", "");
  EXPECT_TRUE(one_line_error(test::run_cli("-q prune -m '" + hf + "' --method patch-tile --sparsity 0.3 -f '" + tmp +
                                           "/empty.txt' -o '" + tmp + "/bad'"),
                             "empty training text"));
  EXPECT_TRUE(one_line_error(test::run_cli("-q prune -m '" + hf + "' --method patch-tile --sparsity 0.3 -f '" + tmp +
                                           "/missing.txt' -o '" + tmp + "/bad'"),
                             "not found"));
  // --resume over the state file of an older version (a LibTorch archive, no longer read).
  dir_create(tmp + "/old");
  file_write_atomic(tmp + "/old/learn_state.pt", "PK\x03\x04 an archive");
  EXPECT_TRUE(one_line_error(test::run_cli(pre.substr(0, pre.rfind(" -o ")) + " -o '" + tmp + "/old' --sparsity 0.3 "
                                           "--resume"),
                             "learn_state.pt: a learning state of an older patchllm"));
  // A MaskLLM prior made for another model.
  test::TinySpec spec;
  auto other = test::tiny_model_write(tmp + "/other", spec);
  r = test::run_cli("-q prune -m '" + other + "' --method magnitude --pattern 2:4 -o '" + tmp + "/om'");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("-q export -m '" + other + "' --masks '" + tmp + "/om/masks.safetensors' --format maskllm-npz -o '" +
                    tmp + "/om/mask.npz'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto mm = test::run_cli(pre + " --sparsity 0.3 --prior maskllm-npz --prior-from '" + tmp + "/om/mask.npz'");
  EXPECT_NE(mm.code, 0);
  EXPECT_EQ(std::count(mm.err.begin(), mm.err.end(), '\n'), 1) << mm.err;
  EXPECT_FALSE(file_exists(tmp + "/bad/masks.safetensors"));
}
