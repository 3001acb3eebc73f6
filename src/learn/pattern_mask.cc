#include "learn/pattern_mask.h"

#include "core/error.h"
#include "learn/noise.h"

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
  auto u = noise_uniform(phi.sizes(), noise_seed, phi.device(), 1e-10, 1.0);
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

torch::Tensor JointMaskedLinear::forward(const torch::Tensor& x) {
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
