// Fused mask-learning kernels (src/ops/mask_kernels.cu) against independent references: the Philox stream against
// the Random123 known-answer vectors (CPU); on CUDA, the kernels' W_eff and gradients against a float64 autograd
// reference that draws the same noise on the host, and the fused linears' end-to-end gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "learn/pattern_mask.h"
#include "learn/tile_mask.h"
#include "ops/mask_fused.h"
#include "ops/philox.h"
#include "torch_test_util.h"

using namespace patchllm;
using test::random_24;
using test::rel_err;

namespace {

bool cuda_ready() { return torch::cuda::is_available() && mask_fused_available(torch::zeros({1}, torch::kCUDA)); }
#define REQUIRE_CUDA()                                                                                      \
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device, or built without the kernels against a CUDA LibTorch: " \
                                     "fused kernels not run"

// Float64 reference of the Joint mask with the host side of the kernels' noise.
struct JointRef {
  torch::Tensor phi, t, M;  // phi, t: float64 leaves
};
JointRef joint_ref(const torch::Tensor& phi, const torch::Tensor& t, int64_t R, int64_t C, const TileGrid& g,
                   const FusedMaskSpec& s) {
  JointRef r;
  r.phi = phi.detach().cpu().to(torch::kFloat64).requires_grad_(true);
  auto u = joint_noise_uniform(phi.size(0), s.seed).to(torch::kFloat64);
  auto m = pattern_mask(pattern_sample_from(r.phi, u, s.kappa, s.tau, s.hard), R, C);
  if (t.defined()) {
    r.t = t.detach().cpu().to(torch::kFloat64).requires_grad_(true);
    auto T = tile_expand(r.t, g);
    m = T + (1 - T) * m;
  }
  r.M = m;
  return r;
}

}  // namespace

TEST(Philox, KnownAnswerVectors) {
  // Random123 tests/kat_vectors, "philox4x32 10" lines: counter words, key words -> output words.
  struct Kat {
    Philox4 c;
    uint32_t k0, k1;
    Philox4 out;
  } kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const auto& k : kats) {
    Philox4 o = philox4x32_10(k.c, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(o.v[i], k.out.v[i]) << "word " << i;
  }
}

TEST(Philox, UniformsAreOpenAndUniform) {
  auto u = joint_noise_uniform(40000, 12345);  // 240000 draws
  EXPECT_GT(u.min().item<float>(), 0.f);
  EXPECT_LT(u.max().item<float>(), 1.f);
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 0.003);   // σ/√n = 0.29/490 ≈ 6e-4
  EXPECT_NEAR(u.var().item<double>(), 1.0 / 12, 0.002);
  // Every value finite under the Gumbel transform the kernels apply.
  EXPECT_TRUE(torch::isfinite(-torch::log(-torch::log(u))).all().item<bool>());
  // Another seed gives another stream.
  EXPECT_FALSE(torch::equal(u, joint_noise_uniform(40000, 12346)));
}

TEST(LearnFused, JointKernelsMatchFloat64Autograd) {
  REQUIRE_CUDA();
  const int64_t R = 200, C = 136;  // ragged against 64×32 tiles: 200 = 3·64 + 8, 136 = 4·32 + 8
  TileGrid g{R, C, 64, 32};
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(3);
  auto w = (torch::randn({R, C}, gen) * 0.05).to(torch::kBFloat16);
  auto gw = (torch::randn({R, C}, gen) * 0.01).to(torch::kBFloat16);
  auto phi = torch::randn({R * C / 4, 6}, gen) * 0.02;
  auto t = torch::rand({g.grid_r(), g.grid_c()}, gen);
  struct Case {
    double kappa, tau;
    bool hard, tiles, norm;
  } cases[] = {{3, 1.5, false, true, false}, {100, 4, false, true, true}, {3, 1.5, false, false, true},
               {500, 0.05, true, true, true}};
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << "kappa " << c.kappa << " tau " << c.tau << " hard " << c.hard << " tiles "
                                    << c.tiles << " norm " << c.norm);
    FusedMaskSpec s;
    s.tile_r = g.tile_r, s.tile_c = g.tile_c, s.kappa = c.kappa, s.tau = c.tau, s.hard = c.hard, s.seed = 99;
    auto tt = c.tiles ? t : torch::Tensor();
    auto ref = joint_ref(phi, tt, R, C, g, s);
    auto wd = w.to(torch::kFloat64);
    auto weff_ref = wd * ref.M;
    auto norm_ref = weff_ref.square().sum().sqrt();
    const double a = 0.7;  // loss = Σ W_eff ⊙ gw + a·‖W ⊙ M‖
    auto loss = (weff_ref * gw.to(torch::kFloat64)).sum() + (c.norm ? a * norm_ref : torch::zeros({}, torch::kFloat64));
    loss.backward();

    torch::Tensor nsq;
    auto weff = joint_weff_fused(w.cuda(), phi.cuda(), c.tiles ? t.cuda() : torch::Tensor(), s, &nsq);
    torch::Tensor coef;
    if (c.norm) coef = torch::full({}, a, torch::kFloat32).cuda() / nsq.sqrt();
    torch::Tensor weff2;  // the gradient pass also writes W_eff (for the dL/dx GEMM)
    auto [dphi, dt] = joint_weff_grad_fused(gw.cuda(), w.cuda(), phi.cuda(), c.tiles ? t.cuda() : torch::Tensor(), s,
                                            coef, &weff2);
    EXPECT_LT(rel_err(weff2, weff_ref), 4e-3);
    // W_eff is rounded once to bf16 (relative 2⁻⁹); the rest is fp32 arithmetic on the same inputs.
    EXPECT_LT(rel_err(weff, weff_ref), 4e-3);
    EXPECT_NEAR(nsq.sqrt().item<double>() / norm_ref.item<double>(), 1.0, 1e-5);
    EXPECT_LT(rel_err(dphi, ref.phi.grad()), 1e-4);
    if (c.tiles) EXPECT_LT(rel_err(dt, ref.t.grad()), 1e-4);
    else EXPECT_FALSE(dt.defined());
  }
}

TEST(LearnFused, JointLinearGradientsMatchFloat64) {
  REQUIRE_CUDA();
  // The autograd wiring of the fused linear: y, dL/dx, dL/dφ, dL/dt and the weight regulariser's norm, against the
  // float64 composition x (W ⊙ M)ᵀ + b with the same noise.
  const int64_t R = 96, C = 160, B = 3, T = 5;
  TileGrid g{R, C, 32, 64};
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(5);
  auto w = (torch::randn({R, C}, gen) * 0.05).to(torch::kFloat32);
  auto b = torch::randn({R}, gen) * 0.1;
  auto x = torch::randn({B, T, C}, gen);
  auto r = torch::randn({B, T, R}, gen);
  auto phi = torch::randn({R * C / 4, 6}, gen) * 0.02;
  auto t = torch::rand({g.grid_r(), g.grid_c()}, gen);
  JointMaskedLinear lin(Linear(w.cuda(), b.cuda()), g);
  lin.kappa = 5, lin.tau = 2, lin.noise_seed = 1234, lin.want_norm = true;
  auto xc = x.cuda().requires_grad_(true), pc = phi.cuda().requires_grad_(true), tc = t.cuda().requires_grad_(true);
  lin.phi = pc, lin.t = tc;
  auto y = lin.forward(xc);
  ((y * r.cuda()).sum() + 0.3 * lin.last_norm).backward();

  FusedMaskSpec s;
  s.kappa = 5, s.tau = 2, s.seed = 1234;
  auto ref = joint_ref(phi, t, R, C, g, s);
  auto xd = x.to(torch::kFloat64).requires_grad_(true);
  auto wm = w.to(torch::kFloat64) * ref.M;
  auto yd = torch::matmul(xd, wm.t()) + b.to(torch::kFloat64);
  ((yd * r.to(torch::kFloat64)).sum() + 0.3 * wm.square().sum().sqrt()).backward();
  EXPECT_LT(rel_err(y, yd), 1e-5);
  EXPECT_LT(rel_err(xc.grad(), xd.grad()), 1e-5);
  EXPECT_LT(rel_err(pc.grad(), ref.phi.grad()), 1e-4);
  EXPECT_LT(rel_err(tc.grad(), ref.t.grad()), 1e-4);
}

TEST(LearnFused, TileLinearMatchesUnfusedAndFloat64) {
  REQUIRE_CUDA();
  const int64_t R = 136, C = 200, B = 2, T = 7;  // ragged against 32×48 tiles
  TileGrid g{R, C, 32, 48};
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(9);
  auto w = (torch::randn({R, C}, gen) * 0.05).to(torch::kBFloat16);
  auto keep = random_24(R, C, 4) > 0.5;
  auto x = torch::randn({B, T, C}, gen).to(torch::kBFloat16);
  auto r = torch::randn({B, T, R}, gen);
  auto t = torch::rand({g.grid_r(), g.grid_c()}, gen);
  torch::Tensor ys[2], gts[2], gxs[2];
  for (int fused = 0; fused < 2; ++fused) {
    TileMaskedLinear lin(Linear(w.cuda(), torch::Tensor()), keep, g);
    lin.fused = fused;
    auto xc = x.cuda().requires_grad_(true);
    lin.t = t.cuda().requires_grad_(true);
    ys[fused] = lin.forward(xc);
    (ys[fused].to(torch::kFloat32) * r.cuda()).sum().backward();
    gts[fused] = lin.t.grad();
    gxs[fused] = xc.grad();
  }
  // Float64 reference: W_eff = W ⊙ (T + (1 − T) ⊙ M24) with the bf16 inputs.
  auto td = t.to(torch::kFloat64).requires_grad_(true);
  auto T64 = tile_expand(td, g);
  auto xd = x.to(torch::kFloat64).requires_grad_(true);
  auto weff = w.to(torch::kFloat64) * (T64 + (1 - T64) * keep.to(torch::kFloat64));
  auto yd = torch::matmul(xd, weff.t());
  (yd * r.to(torch::kFloat64)).sum().backward();
  for (int fused = 0; fused < 2; ++fused) {
    SCOPED_TRACE(fused ? "fused" : "unfused");
    EXPECT_LT(rel_err(ys[fused], yd), 1e-2);  // bf16 GEMM
    EXPECT_LT(rel_err(gxs[fused], xd.grad()), 1e-2);
    // dL/dW_eff is a bf16 GEMM output in both paths; the reduction is fp32.
    EXPECT_LT(rel_err(gts[fused], td.grad()), 1e-2);
  }
  EXPECT_LT(rel_err(gts[1], gts[0]), 2e-3);
  // The masked weights agree to one bf16 rounding.
  FusedMaskSpec s;
  s.tile_r = g.tile_r, s.tile_c = g.tile_c;
  auto wf = tile_weff_fused(w.cuda(), keep.cuda(), t.cuda(), s);
  EXPECT_LT(rel_err(wf, weff), 4e-3);
  torch::Tensor wb;  // and the one the gradient pass writes
  auto gt = tile_weff_grad_fused(torch::ones_like(w).cuda(), w.cuda(), keep.cuda(), s, t.cuda(), &wb);
  EXPECT_LT(rel_err(wb, weff), 4e-3);
  EXPECT_LT(rel_err(gt, tile_reduce(w.to(torch::kFloat64) * keep.logical_not(), g)), 1e-5);
}

TEST(LearnFused, AdamWStepMatchesLibTorch) {
  REQUIRE_CUDA();
  // Clipping active (0.05) and not (1e3), with and without weight decay: three steps of the fused update against
  // clip_grad_norm_ + torch::optim::AdamW::step on copies of the same parameters and gradients.
  for (double clip : {0.05, 1e3})
    for (double wd : {0.0, 0.1}) {
      SCOPED_TRACE(testing::Message() << "clip " << clip << " weight decay " << wd);
      auto gen = torch::make_generator<at::CPUGeneratorImpl>(11);
      std::vector<torch::Tensor> a, b;
      for (int64_t n : {1001, 4096, 37}) {
        auto v = torch::randn({n}, gen).cuda();
        a.push_back(v.clone().requires_grad_(true));
        b.push_back(v.clone().requires_grad_(true));
      }
      auto opts = torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd);
      torch::optim::AdamW oa(a, opts), ob(b, opts);
      for (int step = 0; step < 3; ++step) {
        for (size_t i = 0; i < a.size(); ++i) {
          auto g = torch::randn({a[i].numel()}, gen).cuda() * 0.1;
          a[i].mutable_grad() = g.clone();
          b[i].mutable_grad() = g.clone();
        }
        torch::nn::utils::clip_grad_norm_(a, clip);
        oa.step();
        ASSERT_TRUE(adamw_step_fused(ob, clip));
      }
      for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(rel_err(b[i], a[i]), 1e-6);
      // The fused step kept AdamW's own state (step count, moments): saved, loaded into a fresh AdamW over copies,
      // it takes a fourth LibTorch step to the same place as the all-LibTorch optimizer.
      torch::serialize::OutputArchive xb;
      ob.save(xb);
      std::ostringstream sb;
      xb.save_to(sb);
      std::vector<torch::Tensor> c;
      for (auto& t : b) c.push_back(t.detach().clone().requires_grad_(true));
      torch::optim::AdamW oc(c, opts);
      std::istringstream in(sb.str());
      torch::serialize::InputArchive xc;
      xc.load_from(in);
      oc.load(xc);
      for (size_t i = 0; i < a.size(); ++i) {
        auto g = torch::randn({a[i].numel()}, gen).cuda() * 0.1;
        a[i].mutable_grad() = g.clone();
        c[i].mutable_grad() = g.clone();
      }
      torch::nn::utils::clip_grad_norm_(a, clip);
      torch::nn::utils::clip_grad_norm_(c, clip);
      oa.step();
      oc.step();
      for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(rel_err(c[i], a[i]), 1e-6);
    }
}

TEST(LearnFused, AdamWDeclinesNonCudaParameters) {
  auto p = torch::randn({8}).requires_grad_(true);
  p.mutable_grad() = torch::randn({8});
  torch::optim::AdamW opt(std::vector<torch::Tensor>{p}, torch::optim::AdamWOptions(1e-3));
  auto before = p.detach().clone();
  EXPECT_FALSE(adamw_step_fused(opt, 1.0));
  EXPECT_TRUE(torch::equal(p.detach(), before));  // nothing done: the caller steps as usual
}
