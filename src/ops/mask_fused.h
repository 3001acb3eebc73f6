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
// dL/dt [gr, gc] fp32 = Σ_tile gw ⊙ W ⊙ (1 − keep). t and weff (both optional): also write W_eff into *weff in the
// same pass (the backward's dL/dx GEMM needs it).
torch::Tensor tile_weff_grad_fused(const torch::Tensor& gw, const torch::Tensor& w, const torch::Tensor& keep,
                                   const FusedMaskSpec& s, const torch::Tensor& t = {},
                                   torch::Tensor* weff = nullptr);

// Joint mode: W_eff = W ⊙ (T + (1 − T) ⊙ M24(φ, noise)); t undefined: M = M24 (MaskLLM). norm_sq (optional):
// set to the fp32 scalar Σ (W ⊙ M)² (the weight regulariser's squared norm).
torch::Tensor joint_weff_fused(const torch::Tensor& w, const torch::Tensor& phi, const torch::Tensor& t,
                               const FusedMaskSpec& s, torch::Tensor* norm_sq = nullptr);
// {dL/dφ [G, 6], dL/dt [gr, gc] (undefined without t)} from gw = dL/dW_eff; norm_coef (optional fp32 scalar on the
// device) adds coef · M ⊙ W² to dL/dM (the gradient of the norm, coef = dL/d‖W ⊙ M‖ / ‖W ⊙ M‖). weff (optional):
// also write W_eff into *weff in the same pass.
std::pair<torch::Tensor, torch::Tensor> joint_weff_grad_fused(const torch::Tensor& gw, const torch::Tensor& w,
                                                              const torch::Tensor& phi, const torch::Tensor& t,
                                                              const FusedMaskSpec& s,
                                                              const torch::Tensor& norm_coef = {},
                                                              torch::Tensor* weff = nullptr);

// Global-norm gradient clipping (as torch::nn::utils::clip_grad_norm_, max_norm > 0) and one AdamW step of all the
// optimizer's parameters, one fused pass per parameter, with the optimizer's own state tensors (so its save/load and
// resume are unchanged) and no host sync. Returns false, having done nothing, unless every parameter with a
// gradient is a contiguous fp32 CUDA tensor, no group uses amsgrad and the kernels are built; the caller then clips
// and steps as usual.
bool adamw_step_fused(torch::optim::AdamW& opt, double max_norm);

}  // namespace patchllm
