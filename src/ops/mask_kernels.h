// Raw launchers of the fused mask-learning kernels (src/ops/mask_kernels.cu). Plain C++: no LibTorch, no CUDA
// headers; the LibTorch front is src/ops/mask_fused.h. Both learning modes build the effective weight
//   W_eff = W ⊙ (T + (1 − T) ⊙ M24)
// per tile (T = the tile's sample t) in one pass, and their backward reduces dL/dW_eff to the logits' gradients in
// one pass, so nothing full-size but W_eff (and dL/dW_eff, which the dW GEMM writes) is ever touched.
//   Tile mode (PATCH-Tile): M24 is the fixed bool 2:4 mask; backward gives dL/dt per tile.
//   Joint mode (PATCH-Joint, MaskLLM): M24 = C · softmax((κφ + g) / τ) per group of 4 (C: the 6 candidate
//   patterns, g = −log(−log u), u = philox_uniform(seed, 6·group + i), src/ops/philox.h); hard: the forward uses the
//   argmax pattern, the gradient the soft one (straight-through). Backward gives dL/dφ [G, 6] and dL/dt per tile.
// Reference: the LibTorch compositions in src/learn (tile_mask.cc, pattern_mask.cc) fed the same noise
// (tests/test_learn_fused.cc).
#pragma once
#include <cstdint>

namespace patchllm {

enum MaskDType : int { MASK_F32 = 0, MASK_BF16 = 1, MASK_F16 = 2 };

struct MaskKernelArgs {
  int dtype = MASK_BF16;              // of w, weff, gw
  int64_t rows = 0, cols = 0;         // W: [rows, cols], cols % 4 == 0
  int64_t tile_r = 128, tile_c = 128; // tile_c % 4 == 0; ragged edge tiles allowed
  const void* w = nullptr;
  void* weff = nullptr;               // forward output [rows, cols]; backward: also written when set (the dL/dx
                                      // GEMM needs it after the dW GEMM, so one pass serves both)
  const void* gw = nullptr;           // backward input dL/dW_eff [rows, cols]
  const float* t = nullptr;           // [grid_r, grid_c] tile values; null: no tile term (MaskLLM, M = M24; Tile
                                      // backward: no W_eff to write)
  const uint8_t* keep = nullptr;      // Tile mode: bool [rows, cols] fixed 2:4 mask
  const float* phi = nullptr;         // Joint mode: [rows·cols/4, 6] pattern logits
  float kappa = 1, tau = 1;
  bool hard = false;
  uint64_t seed = 0;
  float* dphi = nullptr;              // Joint backward output [rows·cols/4, 6]
  // Per-block partial sums [tiles · mask_kernel_splits()], summed per tile by the caller (deterministic order):
  // forward (Joint, optional): Σ (W ⊙ M)² in fp32 (the weight regulariser's norm); backward: dL/dt (with t only).
  float* partial = nullptr;
  const float* norm_coef = nullptr;   // Joint backward, device scalar or null: adds coef · M ⊙ W² to dL/dM
  void* stream = nullptr;             // cudaStream_t
};

// The tile grid (ragged edge tiles count as tiles).
inline int64_t mask_grid_r(const MaskKernelArgs& a) { return (a.rows + a.tile_r - 1) / a.tile_r; }
inline int64_t mask_grid_c(const MaskKernelArgs& a) { return (a.cols + a.tile_c - 1) / a.tile_c; }
// Blocks per tile (each takes a band of the tile's rows), so that small matrices still fill the GPU.
int mask_kernel_splits(const MaskKernelArgs& a);
// 0 or the cudaError_t of the launch.
int tile_mask_forward(const MaskKernelArgs& a);
int tile_mask_backward(const MaskKernelArgs& a);
int joint_mask_forward(const MaskKernelArgs& a);
int joint_mask_backward(const MaskKernelArgs& a);
const char* mask_kernel_error_string(int err);

// One AdamW update of an fp32 parameter in one pass, as torch::optim::AdamW::step computes it (decoupled weight
// decay, then m = β1·m + (1 − β1)·g, v = β2·v + (1 − β2)·g², p −= lr/bc1 · m / (√v / √bc2 + eps)), with the gradient
// first scaled by *grad_scale (global-norm clipping, read on the device: no host sync).
struct AdamWArgs {
  float* p = nullptr;
  const float* g = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  int64_t n = 0;
  const float* grad_scale = nullptr;  // device scalar or null (1)
  float lr = 0, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0;
  float bias_correction1 = 1, bias_correction2 = 1;
  void* stream = nullptr;
};
int adamw_fused(const AdamWArgs& a);

}  // namespace patchllm
