// Exports: a Hugging Face directory with pruned weights (every pruned entry an exact +0.0), provenance in the
// safetensors __metadata__; and MaskLLM's mask_compressed.npz.
#pragma once
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "mask/mask.h"

namespace patchllm {

struct ExportOptions {
  bool force = false;          // overwrite an existing output
  nlohmann::json provenance;   // stored as __metadata__["patchllm_provenance"]
};

// Copies config/generation/tokenizer files of `model_dir` to `out_dir` and writes model.safetensors: every tensor
// of the base checkpoint in its stored dtype, decoder linears replaced by `weights[name]` when given (e.g.
// SparseGPT's updated weights), then masked with where(keep, w, +0.0).
void export_hf(const std::string& model_dir, const std::string& out_dir, const MaskSet& masks,
               const std::map<std::string, torch::Tensor>& weights, const ExportOptions& opt);

// Packed hybrid directory (docs/FORMATS.md): the same files, but in model.safetensors every masked decoder linear
// <p>.weight becomes <p>.hybrid_data / .hybrid_tile_kinds / .hybrid_tile_offsets (tile map of the mask: 1 = 2:4 tile),
// packed in dtype (kBFloat16 or kHalf); everything else as stored. Written to a temp directory, then renamed.
// masks_file names the mask file in errors (a tile size the packer cannot take, an unstructured mask).
void export_packed(const std::string& model_dir, const std::string& out_dir, const MaskSet& masks,
                   c10::ScalarType dtype, const std::string& masks_file, const ExportOptions& opt);

// Refuses (InvalidArgument) to write into an existing output without force, or into the input model directory.
void export_check_output(const std::string& model_dir, const std::string& out, bool force);

}  // namespace patchllm
