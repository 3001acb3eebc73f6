// One-shot pruning baselines over the decoder linears: magnitude, Wanda, SparseGPT; 2:4 or unstructured.
// W: [out, in]; 2:4 groups are 4 consecutive input (K) columns of a row; keep masks are bool [out, in], true = keep.
// Calibration is layer by layer: the N windows are embedded once, each decoder layer's linear inputs are captured
// while running it, its masks (and SparseGPT's weight updates) are computed, then the activations are propagated
// through the pruned layer to the next one, so only one layer's statistics live at a time.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "mask/mask.h"
#include "model/model.h"

namespace patchllm {

struct PruneOptions {
  std::string method = "wanda";  // magnitude | wanda | sparsegpt
  std::string pattern = "2:4";   // 2:4 | unstructured
  double sparsity = 0.5;         // unstructured only; 2:4 is 50% by construction
  int64_t tile_r = 128, tile_c = 128;
  bool tile_scores = false;      // also store per-tile density of an unstructured mask at `sparsity`
  double damp = 0.01;            // SparseGPT: fraction of mean diag(H) added to the diagonal
  int64_t blocksize = 128;       // SparseGPT: columns per lazy-update block
  int64_t batch = 8;             // calibration windows per layer forward
};

// Masks from importance scores (higher = more important).
torch::Tensor prune_select_24(const torch::Tensor& score);                  // top 2 of every group of 4
torch::Tensor prune_select_rows(const torch::Tensor& score, double s);      // prune floor(in*s) per row
torch::Tensor prune_select_matrix(const torch::Tensor& score, double s);    // prune floor(numel*s) per matrix

torch::Tensor prune_magnitude(const torch::Tensor& w, const std::string& pattern, double s);
// col_sq: [in] sum over calibration tokens of x_j^2; score |W_ij| * ||X_j||_2 (unstructured: per output row).
torch::Tensor prune_wanda(const torch::Tensor& w, const torch::Tensor& col_sq, const std::string& pattern, double s);
// SparseGPT (Frantar & Alistarh 2023): H [in, in] = 2/n X Xᵀ from the layer inputs. Updates w (fp32 [out, in]) in
// place: pruned entries +0.0, the rest OBS-updated. Returns the keep mask.
torch::Tensor prune_sparsegpt(torch::Tensor& w, torch::Tensor H, const std::string& pattern, double s,
                              int64_t blocksize = 128, double damp = 0.01);

// InvalidArgument unless `pattern` is 2:4 or unstructured and `sparsity` is in [0, 1). The per-matrix pruners check
// it with the sparsity they use (2:4: 0.5); the CLI calls it with the flags before anything loads.
void prune_check_pattern(const std::string& pattern, double sparsity);

// N windows of L tokens at seeded random offsets in `tokens`: [N, L] int64. `source` (the text's file) is named in
// the error when the text is shorter than one window.
torch::Tensor prune_calibration_windows(const std::vector<int>& tokens, int64_t n, int64_t len, uint64_t seed,
                                        const std::string& source = "");

// Prunes every decoder linear of `model` in place (weights masked; SparseGPT's updated) and returns the masks.
MaskSet prune_model(Model& model, const torch::Tensor& windows, const PruneOptions& opt);

}  // namespace patchllm
