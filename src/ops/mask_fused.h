// LibTorch front of the fused mask-learning kernels (src/ops/mask_kernels.h: the math, the noise, the reference).
// CUDA tensors only; callers check mask_fused_available() and otherwise use the LibTorch compositions in src/learn.
#pragma once
#include <torch/torch.h>

#include <utility>

namespace patchllm {

// True when w is a CUDA tensor and patchllm was built with the kernels against a CUDA LibTorch.
bool mask_fused_available(const torch::Tensor& w);

// The uniforms u [groups, 6] (CPU fp32) the Joint kernels draw for `seed`: the host side of the same Philox stream.
torch::Tensor joint_noise_uniform(int64_t groups, uint64_t seed);

struct FusedMaskSpec {
  int64_t tile_r = 128, tile_c = 128;
  double kappa = 1, tau = 1;  // Joint
  bool hard = false;          // Joint: straight-through argmax pattern
  uint64_t seed = 0;          // Joint: noise stream
};

// Tile mode: W_eff = where(keep, W, t ⊙ W) per tile. w [R, C] (fp32/bf16/fp16), keep bool [R, C], t fp32 [gr, gc].
torch::Tensor tile_weff_fused(const torch::Tensor& w, const torch::Tensor& keep, const torch::Tensor& t,
                              const FusedMaskSpec& s);
// dL/dt [gr, gc] fp32 = Σ_tile gw ⊙ W ⊙ (1 − keep).
torch::Tensor tile_weff_grad_fused(const torch::Tensor& gw, const torch::Tensor& w, const torch::Tensor& keep,
                                   const FusedMaskSpec& s);

// Joint mode: W_eff = W ⊙ (T + (1 − T) ⊙ M24(φ, noise)); t undefined: M = M24 (MaskLLM). norm_sq (optional):
// set to the fp32 scalar Σ (W ⊙ M)² (the weight regulariser's squared norm).
torch::Tensor joint_weff_fused(const torch::Tensor& w, const torch::Tensor& phi, const torch::Tensor& t,
                               const FusedMaskSpec& s, torch::Tensor* norm_sq = nullptr);
// {dL/dφ [G, 6], dL/dt [gr, gc] (undefined without t)} from gw = dL/dW_eff; norm_coef (optional fp32 scalar on the
// device) adds coef · M ⊙ W² to dL/dM (the gradient of the norm, coef = dL/d‖W ⊙ M‖ / ‖W ⊙ M‖).
std::pair<torch::Tensor, torch::Tensor> joint_weff_grad_fused(const torch::Tensor& gw, const torch::Tensor& w,
                                                              const torch::Tensor& phi, const torch::Tensor& t,
                                                              const FusedMaskSpec& s,
                                                              const torch::Tensor& norm_coef = {});

}  // namespace patchllm
