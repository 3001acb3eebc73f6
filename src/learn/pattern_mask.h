// 2:4 pattern relaxation (patch-method.md §1.4, §1.8): 6 logits per group of 4 consecutive input weights, one per
// way of keeping 2 of 4 (order 1100, 1010, 1001, 0110, 0101, 0011, as MaskLLM and PATCH), sampled with a Gumbel-
// softmax; and the Joint-mode linear W_eff = W ⊙ (T + (1 − T) ⊙ M24) used by PATCH-Joint and the MaskLLM baseline.
#pragma once
#include <torch/torch.h>

#include "learn/tile_mask.h"

namespace patchllm {

// [6, 4] fp32 candidate masks in the order above.
torch::Tensor pattern_candidates();

// Logits [out·in/4, 6] fp32 from a one-shot keep mask [out, in] (2:4 in every group): o_i = overlap of candidate i
// with the kept positions (0, 1, 2), φ = (o_i − 1)·std·strength (PATCH replaces the random init with it) plus, when
// noise_std > 0, N(0, noise_std²) (MaskLLM adds the prior to its random init).
torch::Tensor pattern_prior_logits(const torch::Tensor& keep24, double std, double strength, double noise_std,
                                   torch::Generator gen);

// Soft pattern weights y [G, 6] = softmax((κ·φ + g) / τ), g ~ Gumbel(0, 1) drawn from `noise_seed` (so a recompute in
// a checkpointed backward sees the same sample). hard: straight-through one-hot forward, soft gradient.
torch::Tensor pattern_sample(const torch::Tensor& phi, double kappa, double tau, bool hard, uint64_t noise_seed);
// The same from given uniforms u [G, 6] (g = −log(−log u)): the reference for the fused kernels' noise.
torch::Tensor pattern_sample_from(const torch::Tensor& phi, const torch::Tensor& u, double kappa, double tau,
                                  bool hard);
// Soft 2:4 mask [out, in] = y @ C, reshaped.
torch::Tensor pattern_mask(const torch::Tensor& y, int64_t out, int64_t in);
// Final rule: argmax over the 6 logits -> bool keep [out, in] (exactly 2 of every 4).
torch::Tensor pattern_argmax_keep(const torch::Tensor& phi, int64_t out, int64_t in);

// Joint-mode decoder linear. Before each forward the learner sets t (tile values [grid_r, grid_c]; undefined for
// the MaskLLM baseline, which has no dense tiles), phi (the 2:4 logits leaf or its detached copy during a
// checkpoint recompute), the schedule (kappa, tau) and noise_seed. Everything full-size (y, M, W_eff) is built in
// the forward and lives only as long as autograd needs it: inside a checkpointed layer, only during that layer's
// recompute in backward. On CUDA (fused, the default) one kernel builds W_eff from φ, t and noise drawn in the kernel
// from noise_seed (src/ops/mask_kernels.h), and one reduces dL/dW_eff to dL/dφ and dL/dt: no y, M or noise tensor
// exists, and backward rebuilds W_eff (one elementwise pass) rather than keep it. The noise then comes from Philox,
// not from LibTorch's generator, so the samples differ from the unfused path's (same distribution).
class JointMaskedLinear : public Linear {
 public:
  JointMaskedLinear(const Linear& base, const TileGrid& g);
  torch::Tensor forward(const torch::Tensor& x) override;
  TileGrid grid;
  torch::Tensor t, phi;
  double kappa = 100, tau = 4;
  bool hard = false;
  uint64_t noise_seed = 0;
  bool fused = true;       // CUDA: the fused kernels (false: the LibTorch composition, to compare)
  bool want_norm = false;  // also compute ‖M ⊙ W‖_F (fp32 scalar) into last_norm, for the weight regulariser
  torch::Tensor last_norm;
};

}  // namespace patchllm
