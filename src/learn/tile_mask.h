// PATCH tile relaxation (patch-method.md §1.3, §1.5, §1.9) and the memory-lean Tile-mode linear.
//   W: [out, in], tiles R×C over (out, in) with ragged edge tiles, theta: [ceil(out/R), ceil(in/C)] fp32.
//   t = sigmoid((kappa·theta + L) / tau), L ~ Logistic(0, 1)   (closed form of the 2-way Gumbel-softmax over [0, κθ])
//   W_eff = where(M24, W, t ⊙ W)                                 (= W ⊙ (T + (1 − T) ⊙ M24), Tile mode, M24 fixed)
#pragma once
#include <torch/torch.h>

#include "model/linear.h"

namespace patchllm {

struct TileGrid {
  int64_t rows = 0, cols = 0;      // weight shape [out, in]
  int64_t tile_r = 128, tile_c = 128;
  int64_t grid_r() const { return (rows + tile_r - 1) / tile_r; }
  int64_t grid_c() const { return (cols + tile_c - 1) / tile_c; }
};

// [grid_r, grid_c] fp32: true element count of every tile (ragged edges counted by their real size).
torch::Tensor tile_numel(const TileGrid& g);
// Broadcasts per-tile values [grid_r, grid_c] to the weight shape [rows, cols] (reference path and tests).
torch::Tensor tile_expand(const torch::Tensor& per_tile, const TileGrid& g);
// Sums an [rows, cols] tensor over each tile -> [grid_r, grid_c] (zero-pads the ragged edge), accumulating in dtype.
torch::Tensor tile_reduce(const torch::Tensor& full, const TileGrid& g, c10::optional<c10::ScalarType> dtype = {});
// w ⊙ tile_expand(t) without building the expanded tensor (a broadcast over the tile view).
torch::Tensor tile_scale(const torch::Tensor& w, const torch::Tensor& t, const TileGrid& g);

// The binary-concrete tile sample, logistic noise drawn from `noise_seed` (learn/noise.h). hard = straight-through:
// forward 1[t > 0.5], backward through the soft t.
torch::Tensor tile_sample(const torch::Tensor& theta, double kappa, double tau, bool hard, uint64_t noise_seed);

// Tile-mode linear: y = x W_effᵀ + b with W_eff as above, as a custom autograd function: the forward builds W_eff
// transiently, backward recomputes it and reduces dθ per tile as Σ_tile (gᵀx) ⊙ W ⊙ (1 − M24), so no mask or masked
// weight lives across the step. weight: the frozen W (compute dtype); keep24: bool M24.
// save_weff: keep W_eff for backward (set inside checkpointed layers, where it lives only during the recompute).
// fused: on CUDA, W_eff and dθ each in one kernel pass (src/ops/mask_kernels.h); the same values as the LibTorch path.
torch::Tensor tile_linear(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& weight,
                          const torch::Tensor& keep24, const torch::Tensor& bias, const TileGrid& g,
                          bool save_weff = false, bool fused = true);

// A decoder-linear slot during Tile-mode learning: the frozen weight (shared, not copied), the fixed 2:4 mask as
// bool (1 byte per weight: the only per-weight state learning adds) and the current tile sample.
class TileMaskedLinear : public Linear {
 public:
  TileMaskedLinear(const Linear& base, const torch::Tensor& keep24, const TileGrid& g);
  torch::Tensor forward(const torch::Tensor& x) override;
  TileGrid grid;
  torch::Tensor keep24;  // bool [out, in]
  torch::Tensor t;       // current tile values [grid_r, grid_c], set before each forward
  bool save_weff = false;
  bool fused = true;     // CUDA: the fused kernels (false: the LibTorch composition, to compare)
};

// The reference design, for benchmarks only: the full-size soft mask M (built by the caller outside any
// checkpointed region, so it and its autograd graph live for the whole step) and y = x (W ⊙ M)ᵀ + b.
class MaterialisedMaskLinear : public Linear {
 public:
  explicit MaterialisedMaskLinear(const Linear& base) : Linear(base.weight, base.bias) {}
  torch::Tensor forward(const torch::Tensor& x) override { return torch::linear(x, weight * mask, bias); }
  torch::Tensor mask;  // [out, in] compute dtype
};

// Exact-budget final rule (patch-method.md §6.4): rank all tiles by theta (descending; global across the given
// matrices) and keep dense the fewest top tiles whose element count reaches f_dense·Σ|W| (f_dense = 1 − 2s*).
// Returns one bool [grid_r, grid_c] map per matrix (true = dense).
std::vector<torch::Tensor> tile_select_exact(const std::vector<torch::Tensor>& thetas,
                                             const std::vector<TileGrid>& grids, double target_sparsity);

}  // namespace patchllm
