#include "learn/pattern_mask.h"

#include "core/error.h"
#include "learn/noise.h"
#include "ops/mask_fused.h"

namespace patchllm {

torch::Tensor pattern_candidates() {
  return torch::tensor({1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1}, torch::kFloat32)
      .view({6, 4});
}

torch::Tensor pattern_prior_logits(const torch::Tensor& keep24, double std, double strength, double noise_std,
                                   torch::Generator gen) {
  PATCHLLM_CHECK(keep24.dim() == 2 && keep24.size(1) % 4 == 0, InvalidArgument, "2:4 prior: mask shape ",
                 keep24.sizes(), " needs an input width that is a multiple of 4");
  auto k4 = keep24.to(torch::kCPU, torch::kFloat32).reshape({-1, 4});
  auto overlap = torch::matmul(k4, pattern_candidates().t());  // [G, 6] in {0, 1, 2}
  auto phi = (overlap - 1) * (std * strength);
  if (noise_std > 0) phi += torch::randn(phi.sizes(), gen) * noise_std;
  return phi;
}

torch::Tensor pattern_sample(const torch::Tensor& phi, double kappa, double tau, bool hard, uint64_t noise_seed) {
  return pattern_sample_from(phi, noise_uniform(phi.sizes(), noise_seed, phi.device(), 1e-10, 1.0), kappa, tau, hard);
}

torch::Tensor pattern_sample_from(const torch::Tensor& phi, const torch::Tensor& u, double kappa, double tau,
                                  bool hard) {
  auto g = -torch::log(-torch::log(u));
  auto y = torch::softmax((phi * kappa + g) / tau, -1);
  if (!hard) return y;
  auto one_hot = torch::zeros_like(y).scatter_(-1, y.argmax(-1, /*keepdim=*/true), 1.0);
  return one_hot + (y - y.detach());  // straight-through
}

torch::Tensor pattern_mask(const torch::Tensor& y, int64_t out, int64_t in) {
  return torch::matmul(y, pattern_candidates().to(y.device(), y.scalar_type())).view({out, in});
}

torch::Tensor pattern_argmax_keep(const torch::Tensor& phi, int64_t out, int64_t in) {
  auto idx = phi.detach().argmax(-1).to(torch::kCPU);
  return pattern_candidates().index_select(0, idx).view({out, in}) > 0.5;
}

JointMaskedLinear::JointMaskedLinear(const Linear& base, const TileGrid& g) : Linear(base.weight, base.bias), grid(g) {
  PATCHLLM_CHECK(base.in_features() % 4 == 0, InvalidArgument, "2:4 learning needs an input width that is a multiple "
                 "of 4, got ", base.in_features());
}

namespace {

// The fused Joint linear (CUDA): the forward builds W_eff in one kernel pass with the noise drawn in the kernel, the
// backward builds it again (cheaper than keeping a weight-sized tensor per linear) and reduces dL/dW_eff = gyᵀx to
// dL/dφ and dL/dt in one pass. Outputs {y, ‖W ⊙ M‖_F (0 unless want_norm)}.
struct JointLinearFn : public torch::autograd::Function<JointLinearFn> {
  static FusedMaskSpec spec(torch::autograd::AutogradContext* ctx) {
    FusedMaskSpec s;
    auto v = ctx->saved_data["spec"].toIntVector();
    s.tile_r = v[0], s.tile_c = v[1], s.hard = v[2] != 0, s.seed = uint64_t(v[3]);
    s.kappa = ctx->saved_data["kappa"].toDouble();
    s.tau = ctx->saved_data["tau"].toDouble();
    return s;
  }
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                                const torch::Tensor& phi, const torch::Tensor& t,
                                                const torch::Tensor& w, const FusedMaskSpec& s, bool want_norm) {
    torch::Tensor nsq;
    auto weff = joint_weff_fused(w, phi, t, s, want_norm ? &nsq : nullptr);
    auto norm = want_norm ? nsq.sqrt() : torch::zeros({}, w.options().dtype(torch::kFloat32));
    ctx->save_for_backward({x, phi, t, w, norm});
    ctx->saved_data["spec"] = std::vector<int64_t>{s.tile_r, s.tile_c, s.hard, int64_t(s.seed)};
    ctx->saved_data["kappa"] = s.kappa;
    ctx->saved_data["tau"] = s.tau;
    return {torch::matmul(x, weff.t()), norm};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto v = ctx->get_saved_variables();
    const auto &x = v[0], &phi = v[1], &t = v[2], &w = v[3], &norm = v[4];
    const FusedMaskSpec s = spec(ctx);
    auto gy = grads[0];
    torch::Tensor gx, dphi, dt, weff;
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      // The dW GEMM first: the gradient pass then also writes the W_eff that the dL/dx GEMM needs.
      auto gw = torch::matmul(gy.reshape({-1, gy.size(-1)}).t(), x.reshape({-1, x.size(-1)}));
      torch::Tensor coef;  // d‖W ⊙ M‖/dM = M ⊙ W² / ‖W ⊙ M‖
      if (grads[1].defined()) coef = grads[1].to(torch::kFloat32) / norm.clamp_min(1e-30);
      std::tie(dphi, dt) = joint_weff_grad_fused(gw, w, phi, t, s, coef, ctx->needs_input_grad(0) ? &weff : nullptr);
    }
    if (ctx->needs_input_grad(0)) gx = torch::matmul(gy, weff.defined() ? weff : joint_weff_fused(w, phi, t, s));
    return {gx, dphi, dt, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor JointMaskedLinear::forward(const torch::Tensor& x) {
  if (fused && mask_fused_available(weight)) {
    FusedMaskSpec s;
    s.tile_r = grid.tile_r, s.tile_c = grid.tile_c, s.kappa = kappa, s.tau = tau, s.hard = hard, s.seed = noise_seed;
    auto outs = JointLinearFn::apply(x, phi, t, weight, s, want_norm);
    if (want_norm) last_norm = outs[1];
    return bias.defined() ? outs[0] + bias : outs[0];
  }
  auto y = pattern_sample(phi, kappa, tau, hard, noise_seed);
  auto m = pattern_mask(y, weight.size(0), weight.size(1));
  if (t.defined()) {
    auto T = tile_expand(t, grid);
    m = T + (1 - T) * m;
  }
  if (want_norm) last_norm = (weight.to(torch::kFloat32) * m).square().sum().sqrt();
  return torch::linear(x, weight * m.to(weight.scalar_type()), bias);
}

}  // namespace patchllm
