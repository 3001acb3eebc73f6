// Packed hybrid dense / 2:4 decoder linears in a model: the PackedHybridLinear slot, and the packed safetensors
// tensors of one linear (docs/FORMATS.md "Packed hybrid model directory", blob: docs/formats/packed-hybrid.md).
// x: [..., K] -> y: [..., N]; W: [N, K] packed bf16/fp16, tiles tile_rows × tile_cols (128×128 for the CUDA kernels).
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>

#include "io/safetensors.h"
#include "model/linear.h"
#include "ops/hybrid_linear.h"

namespace patchllm {

class Model;

// Tensor-name suffixes of a packed linear <prefix> (e.g. model.layers.0.self_attn.q_proj), replacing <prefix>.weight.
constexpr const char* kPackedData = ".hybrid_data";            // U8 [bytes]
constexpr const char* kPackedKinds = ".hybrid_tile_kinds";     // U8 [RB, CT], 0 dense, 1 2:4
constexpr const char* kPackedOffsets = ".hybrid_tile_offsets"; // I64 [RB*CT + 1]
constexpr const char* kPackedGeometry = ".hybrid_geometry";    // __metadata__ key: JSON {rows, cols, tile_rows, ...}
constexpr const char* kPackedFormat = "patchllm-packed-hybrid";  // __metadata__ "format"

// y = hybrid_linear(x, hw) (+ bias). x of another dtype (fp32 on the CPU) is cast to the packed dtype and the result
// back. weight stays undefined: code that needs a dense weight refuses packed models (model_require_dense).
class PackedHybridLinear : public Linear {
 public:
  PackedHybridLinear(HybridWeight hw, torch::Tensor bias) : Linear(torch::Tensor(), std::move(bias)), hw(std::move(hw)) {}
  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t out_features() const override { return hw.out_features(); }
  int64_t in_features() const override { return hw.in_features(); }

  HybridWeight hw;
};

// The three packed tensors of one linear (CPU) and its geometry metadata (key <prefix>.hybrid_geometry).
void packed_tensors_add(const std::string& prefix, const HybridWeight& hw, std::map<std::string, torch::Tensor>& tensors,
                        std::map<std::string, std::string>& metadata);

// Reads the packed linears of a checkpoint: checks the format tag and version once, then each linear's tensors
// against its geometry (every error a one-line FormatError naming the file).
class PackedCheckpoint {
 public:
  explicit PackedCheckpoint(const Checkpoint& ckpt);
  bool is_packed() const { return !_file.empty(); }
  bool has(const std::string& prefix) const { return _ckpt.has(prefix + kPackedData); }
  // The packed weight of <prefix>, checked to be [out, in], on the CPU.
  HybridWeight load(const std::string& prefix, int64_t out, int64_t in) const;

 private:
  const Checkpoint& _ckpt;
  std::string _file;                            // file holding the packed format tag, "" when not packed
  std::map<std::string, std::string> _meta;     // merged __metadata__ of all shards
};

// True when the model directory's checkpoint holds packed linears (reads headers only).
bool checkpoint_is_packed(const Checkpoint& ckpt);
// InvalidArgument "<dir>: <what> needs dense decoder weights; this is a packed hybrid model ..." when packed.
void checkpoint_require_dense(const Checkpoint& ckpt, const std::string& dir, const std::string& what);
// The same for a loaded model (any PackedHybridLinear slot).
void model_require_dense(Model& model, const std::string& what);

// Adds the prefill image (hybrid_add_prefill_image) to every packed linear with 128 × 128 tiles that the forward
// runs: a current fused q|k|v or gate|up (model_fuse_projections: call it first) instead of its parts. The prefill
// kernel v7 (HybridKernelOptions::prefill_sharex) then reads the weight by descriptor (SS form) instead of through
// registers. As many bytes again as those weights. Returns the number of images built.
int64_t model_add_prefill_images(Model& model);

// Packs every decoder linear of a loaded dense model in place (bench and tests): per linear a seeded random tile map
// with round(f * tiles) 2:4 tiles and magnitude 2:4 masks inside them; weights cast to dtype. Returns the packed
// sparse-tile fraction over all linears.
double model_pack_random(Model& model, double f, uint64_t seed, c10::ScalarType dtype = torch::kBFloat16,
                         int tile_rows = 128, int tile_cols = 128);

}  // namespace patchllm
