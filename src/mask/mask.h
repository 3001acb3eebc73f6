// Masks over the decoder linears: the in-memory set, the versioned mask file (safetensors; docs/formats/mask.md),
// MaskLLM's mask_compressed.npz, the base-model fingerprint, and applying a mask to a loaded model.
// Keep masks: bool [out, in] on CPU, true = keep. 2:4 groups are 4 consecutive input (K) columns of one row.
#pragma once
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "model/model.h"

namespace patchllm {

constexpr int kMaskFormatVersion = 1;

struct LinearMask {
  torch::Tensor keep;         // bool [out, in], true = keep
  torch::Tensor tile_map;     // U8 [ceil(out/R), ceil(in/C)], 1 = 2:4 tile, 0 = dense; undefined for unstructured
  torch::Tensor tile_scores;  // F32 [ceil(out/R), ceil(in/C)] (density of an unstructured mask), optional
};

struct MaskSet {
  std::string pattern = "2:4";  // "2:4" (tile map all ones or hybrid dense/2:4) | "unstructured"
  int64_t tile_r = 128, tile_c = 128;
  std::map<std::string, LinearMask> masks;    // by HF weight name, e.g. model.layers.0.self_attn.q_proj.weight
  std::map<std::string, std::string> meta;    // method, target_sparsity, seed, calibration_sha256, ... (free form)
  std::string fingerprint;                    // base_model_fingerprint (sha256 hex), empty = unknown (npz import)
  std::string fingerprint_desc;               // human-readable config summary of the base model

  int64_t total() const;
  int64_t kept() const;
  double sparsity() const { return total() ? 1.0 - double(kept()) / double(total()) : 0.0; }
};

// Bits over a flattened bool tensor, row-major, MSB first (np.packbits): U8 [ceil(numel/8)], tail bits zero.
torch::Tensor mask_packbits(const torch::Tensor& keep);
torch::Tensor mask_unpackbits(const torch::Tensor& packed, std::vector<int64_t> shape);

// All-ones tile map [ceil(out/R), ceil(in/C)] (a pure 2:4 mask).
torch::Tensor mask_tile_map_full(int64_t out, int64_t in, int64_t r, int64_t c);
// Per-tile density (kept fraction) of a keep mask, ragged edge tiles counted by their true size. F32.
torch::Tensor mask_tile_density(const torch::Tensor& keep, int64_t r, int64_t c);
// Throws FormatError (prefixed by `where`) unless every group of 4 in 2:4 tiles keeps exactly 2 and dense tiles keep all.
void mask_validate_24(const torch::Tensor& keep, const torch::Tensor& tile_map, int64_t r, int64_t c,
                      const std::string& where);

// sha256 over the config's shape fields, every decoder linear's name/dtype/shape and the first and last 4 KiB of
// its stored bytes. Independent of the load dtype/device. `desc` receives a one-line summary.
std::string model_fingerprint(const std::string& model_dir, std::string* desc = nullptr);

// Mask file: <path>.safetensors (ours) or a MaskLLM .npz (by extension).
void mask_save(const std::string& path, const MaskSet& m);
MaskSet mask_load(const std::string& path);
// Checks names, shapes and (when both known) the fingerprint against a model directory; one-line InvalidArgument.
void mask_check_model(const MaskSet& m, const std::string& model_dir);
// Decoder-linear weight shapes of a model directory, from its checkpoint headers.
std::map<std::string, std::vector<int64_t>> mask_model_shapes(const std::string& model_dir);
// mask_load (npz: shapes from model_dir) + mask_check_model when model_dir is not empty.
MaskSet mask_load_checked(const std::string& path, const std::string& model_dir);

// MaskLLM mask_compressed.npz: per param "<weight name>.mask" = np.packbits(mask.flatten()), 1 = keep.
void mask_save_npz(const std::string& path, const MaskSet& m);
MaskSet mask_load_npz(const std::string& path, const std::map<std::string, std::vector<int64_t>>& shapes);

// Applies masks to a loaded model: every masked weight becomes where(keep, w, +0.0) (never -0.0).
void mask_apply(Model& model, const MaskSet& m);
// Weight with pruned entries set to exact +0.0.
torch::Tensor mask_weight(const torch::Tensor& w, const torch::Tensor& keep);

// mask_load + mask_check_model + mask_apply, the path used by `eval ppl --masks` and `inspect`.
MaskSet mask_load_for_model(const std::string& path, const std::string& model_dir, Model& model);

}  // namespace patchllm

namespace patchllm {

// Per-matrix and per-layer sparsity and dense-tile fraction (by element count; unstructured masks: 0).
nlohmann::json mask_report(const MaskSet& m);
// SVG picture of the tile maps: one row of matrices per layer (q k v o gate up down), one square per tile;
// dark = dense tile, light = 2:4 tile; unstructured masks (or with tile_scores) are shaded by per-tile density.
std::string mask_svg(const MaskSet& m);

}  // namespace patchllm
