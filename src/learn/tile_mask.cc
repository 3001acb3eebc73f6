#include "learn/tile_mask.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "learn/noise.h"
#include "ops/mask_fused.h"

namespace patchllm {

torch::Tensor tile_numel(const TileGrid& g) {
  auto r = torch::full({g.grid_r()}, static_cast<float>(g.tile_r));
  auto c = torch::full({g.grid_c()}, static_cast<float>(g.tile_c));
  r[-1] = static_cast<float>(g.rows - (g.grid_r() - 1) * g.tile_r);
  c[-1] = static_cast<float>(g.cols - (g.grid_c() - 1) * g.tile_c);
  return r.view({-1, 1}) * c.view({1, -1});
}

torch::Tensor tile_expand(const torch::Tensor& per_tile, const TileGrid& g) {
  return per_tile.repeat_interleave(g.tile_r, 0)
      .repeat_interleave(g.tile_c, 1)
      .narrow(0, 0, g.rows)
      .narrow(1, 0, g.cols);
}

torch::Tensor tile_reduce(const torch::Tensor& full, const TileGrid& g, c10::optional<c10::ScalarType> dtype) {
  const int64_t pr = g.grid_r() * g.tile_r - g.rows, pc = g.grid_c() * g.tile_c - g.cols;
  auto p = (pr || pc) ? torch::constant_pad_nd(full, {0, pc, 0, pr}) : full;  // no copy when the tiles divide
  return p.view({g.grid_r(), g.tile_r, g.grid_c(), g.tile_c}).sum({1, 3}, /*keepdim=*/false, dtype);
}

torch::Tensor tile_scale(const torch::Tensor& w, const torch::Tensor& t, const TileGrid& g) {
  const int64_t pr = g.grid_r() * g.tile_r - g.rows, pc = g.grid_c() * g.tile_c - g.cols;
  auto tt = t.to(w.scalar_type()).view({g.grid_r(), 1, g.grid_c(), 1});
  if (!pr && !pc)  // one broadcast pass, no full-size T
    return (w.view({g.grid_r(), g.tile_r, g.grid_c(), g.tile_c}) * tt).view({g.rows, g.cols});
  auto p = torch::constant_pad_nd(w, {0, pc, 0, pr}).view({g.grid_r(), g.tile_r, g.grid_c(), g.tile_c});
  return (p * tt).view({g.grid_r() * g.tile_r, g.grid_c() * g.tile_c}).narrow(0, 0, g.rows).narrow(1, 0, g.cols);
}

torch::Tensor tile_sample(const torch::Tensor& theta, double kappa, double tau, bool hard, uint64_t noise_seed) {
  auto u = noise_uniform(theta.sizes(), noise_seed, theta.device(), 1e-6, 1 - 1e-6);
  auto L = torch::log(u) - torch::log1p(-u);
  auto t = torch::sigmoid((kappa * theta + L) / tau);
  if (!hard) return t;
  auto h = (t > 0.5).to(t.scalar_type());
  return h + (t - t.detach());  // straight-through: hard forward, soft gradient
}

namespace {

struct TileLinearFn : public torch::autograd::Function<TileLinearFn> {
  // W_eff = where(M24, W, T ⊙ W): kept entries always, pruned entries scaled by their tile's t. fused: one CUDA
  // kernel pass (src/ops/mask_kernels.h) instead of the broadcast and the where.
  static torch::Tensor effective(const torch::Tensor& t, const torch::Tensor& w, const torch::Tensor& keep,
                                 const TileGrid& g, bool fused) {
    if (fused) return tile_weff_fused(w, keep, t, spec(g));
    return torch::where(keep, w, tile_scale(w, t, g));
  }
  static FusedMaskSpec spec(const TileGrid& g) {
    FusedMaskSpec s;
    s.tile_r = g.tile_r, s.tile_c = g.tile_c;
    return s;
  }
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& t,
                               const torch::Tensor& w, const torch::Tensor& keep, const TileGrid& g, bool save_weff,
                               bool fused) {
    auto weff = effective(t, w, keep, g, fused);
    // save_weff: keep W_eff for backward instead of rebuilding it (inside a checkpointed layer it lives only while
    // that layer is recomputed; otherwise it would add one weight-sized tensor per linear for the whole step).
    ctx->save_for_backward({x, t, w, keep, save_weff ? weff : torch::Tensor()});
    ctx->saved_data["g"] = std::vector<int64_t>{g.rows, g.cols, g.tile_r, g.tile_c, fused};
    return torch::matmul(x, weff.t());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto& x = s[0];
    auto& t = s[1];
    auto& w = s[2];
    auto& keep = s[3];
    auto v = ctx->saved_data["g"].toIntVector();
    TileGrid g{v[0], v[1], v[2], v[3]};
    const bool fused = v[4] != 0;
    auto gy = grads[0];
    torch::Tensor gx, gt, weff = s[4];
    if (ctx->needs_input_grad(1)) {
      // dL/dW_eff = gyᵀ x over all tokens; dL/dt_tile = Σ_tile dL/dW_eff ⊙ W ⊙ (1 − M24), summed in fp32.
      auto gw = torch::matmul(gy.reshape({-1, gy.size(-1)}).t(), x.reshape({-1, x.size(-1)}));
      if (fused) {  // the same pass writes the W_eff that the dL/dx GEMM below needs
        torch::Tensor* weff_out = ctx->needs_input_grad(0) && !weff.defined() ? &weff : nullptr;
        gt = tile_weff_grad_fused(gw, w, keep, spec(g), t, weff_out).to(t.scalar_type());
      } else {
        auto acc = at::promote_types(gw.scalar_type(), torch::kFloat32);
        gt = tile_reduce(torch::where(keep, torch::zeros({}, gw.options()), gw * w), g, acc).to(t.scalar_type());
      }
    }
    if (ctx->needs_input_grad(0)) gx = torch::matmul(gy, weff.defined() ? weff : effective(t, w, keep, g, fused));
    return {gx, gt, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor tile_linear(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& weight,
                          const torch::Tensor& keep24, const torch::Tensor& bias, const TileGrid& g, bool save_weff,
                          bool fused) {
  // Fused, rebuilding W_eff in backward is one elementwise pass: cheaper than keeping it.
  const bool use_fused = fused && mask_fused_available(weight);
  auto y = TileLinearFn::apply(x, t, weight, keep24, g, save_weff && !use_fused, use_fused);
  return bias.defined() ? y + bias : y;
}

TileMaskedLinear::TileMaskedLinear(const Linear& base, const torch::Tensor& keep24_in, const TileGrid& g)
    : Linear(base.weight, base.bias), grid(g) {
  PATCHLLM_CHECK(keep24_in.sizes() == base.weight.sizes(), InvalidArgument, "2:4 mask shape ", keep24_in.sizes(),
                 " != weight shape ", base.weight.sizes());
  keep24 = keep24_in.to(base.weight.device(), torch::kBool).contiguous();
  t = torch::ones({g.grid_r(), g.grid_c()}, torch::TensorOptions().device(base.weight.device()));
}

torch::Tensor TileMaskedLinear::forward(const torch::Tensor& x) {
  return tile_linear(x, t, weight, keep24, bias, grid, save_weff, fused);
}

std::vector<torch::Tensor> tile_select_exact(const std::vector<torch::Tensor>& thetas,
                                             const std::vector<TileGrid>& grids, double target_sparsity) {
  PATCHLLM_CHECK(target_sparsity >= 0 && target_sparsity <= 0.5, InvalidArgument, "target sparsity ",
                 target_sparsity, " outside [0, 0.5]");
  PATCHLLM_CHECK(thetas.size() == grids.size(), InvalidArgument, "tile_select_exact: ", thetas.size(), " thetas, ",
                 grids.size(), " grids");
  struct Item {
    float theta;
    double numel;
    size_t m;
    int64_t idx;
  };
  std::vector<Item> items;
  double total = 0;
  for (size_t m = 0; m < thetas.size(); ++m) {
    auto th = thetas[m].detach().to(torch::kCPU, torch::kFloat32).contiguous();
    auto ne = tile_numel(grids[m]).contiguous();
    for (int64_t i = 0; i < th.numel(); ++i) {
      items.push_back({th.data_ptr<float>()[i], ne.data_ptr<float>()[i], m, i});
      total += ne.data_ptr<float>()[i];
    }
  }
  // Stable order for ties: theta descending, then matrix and position.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.theta > b.theta; });
  const double budget = (1.0 - 2.0 * target_sparsity) * total;
  std::vector<torch::Tensor> out;
  for (const auto& g : grids) out.push_back(torch::zeros({g.grid_r(), g.grid_c()}, torch::kBool));
  double dense = 0;
  for (const auto& it : items) {
    if (dense >= budget) break;
    // Take the tile if it brings the dense count closer to the budget than stopping here would.
    if (dense + it.numel - budget > budget - dense) break;
    out[it.m].view({-1})[it.idx] = true;
    dense += it.numel;
  }
  return out;
}

}  // namespace patchllm
