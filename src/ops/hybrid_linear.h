// Hybrid dense / 2:4 linear layer: packing, reference, and the one front hybrid_linear(x, hw) -> y.
// W: [N, K] bf16/fp16, tiles tile_rows × tile_cols (default 128×128), each either dense or 2:4 along K.
// Format spec: docs/formats/packed-hybrid.md (version HYBRID_FORMAT_VERSION).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "ops/hybrid_format.h"

namespace patchllm {

struct HybridWeight {
  torch::Tensor data;          // uint8 [total_bytes]: tile blobs, row-block-major (device of the op)
  torch::Tensor tile_kinds;    // uint8 [row_blocks, col_tiles]: 0 dense, 1 2:4 (same device as data)
  torch::Tensor tile_offsets;  // int64 [row_blocks * col_tiles + 1]: byte offset of each tile blob (same device)
  torch::ScalarType dtype = torch::kBFloat16;  // kBFloat16 or kHalf
  HybridLayout layout;         // host copy of the geometry, kinds and offsets
  int version = HYBRID_FORMAT_VERSION;
  // Optional prefill image (hybrid_format.h, hybrid_add_prefill_image): data's slabs in the wgmma-descriptor order,
  // same size and offsets, same device. Where present, the prefill kernel v7 (option sharex) reads it instead.
  torch::Tensor prefill_image;
  // Built with the image: int32 [hybrid_prefill_order_words], each row-block pair's slabs with the all-2:4 ones first
  // (hybrid_prefill_order_raw), for the prefill kernel v8 (option sharex, where some tile is dense).
  torch::Tensor prefill_order;
  // CUDA workspace (split row-block partials + counters), grown on demand; one stream at a time per weight.
  std::shared_ptr<torch::Tensor> workspace = std::make_shared<torch::Tensor>();

  int64_t out_features() const { return layout.rows; }
  int64_t in_features() const { return layout.cols; }
  torch::Device device() const { return data.device(); }
  HybridWeight to(torch::Device device) const;  // copy of data/kinds/offsets (and image) on device (new workspace)
  double sparse_tile_fraction() const;
};

// weight: [N, K] bf16/fp16; tile_is_sparse: [ceil(N/R), ceil(K/C)] bool/uint8 (1 = 2:4 tile); keep_mask: bool [N, K],
// exactly 2 of every 4 consecutive K elements kept inside 2:4 tiles (ignored in dense tiles). Packs on the CPU.
HybridWeight hybrid_pack(const torch::Tensor& weight, const torch::Tensor& tile_is_sparse,
                         const torch::Tensor& keep_mask, int tile_rows = 128, int tile_cols = 128);
// Adds hw.prefill_image and hw.prefill_order, built on the CPU from hw.data and put on hw's device: as many bytes
// again as the weight, for v7's and v8's faster prefill (v7: 1.10–1.27× v4d where the v1 blob gives 0.92–1.09×, H100,
// session 28; v8: 1.01–1.07× v7 in the median, session 32). Needs 128×128 tiles.
void hybrid_add_prefill_image(HybridWeight& hw);
// Dense [N, K] weight the packed one represents: dense tiles as stored, 2:4 tiles with pruned entries exactly +0.
torch::Tensor hybrid_unpack(const HybridWeight& hw);
// Reference: unpack, fp32 GEMM, cast to x's dtype. x: [..., K] -> [..., N]. The oracle for the kernels.
torch::Tensor hybrid_linear_ref(const torch::Tensor& x, const HybridWeight& hw);
// The one front. x: [..., K] on hw's device, dtype == hw.dtype. CPU -> reference; CUDA -> hybrid kernels.
torch::Tensor hybrid_linear(const torch::Tensor& x, const HybridWeight& hw);

// How hybrid_linear launches the CUDA kernels on sm_90, process-wide. pdl is on by default (measured end to end); the
// others are off, for experiments. All only take effect on sm_90 device code. Set before launching, from one thread.
struct HybridKernelOptions {
  bool pdl = true;                 // programmatic dependent launch in the decode step: the hybrid decode kernel
                                   // (HybridGemmArgs::pdl) and the fused layer kernels (ops/layer_ops.h), so each
                                   // may start during the tail of the kernel before it. The default since session
                                   // 25 (end to end +6…13% decode tok/s with the hybrid model, H100; no-op before
                                   // sm_90); "plain" turns it off
  // Decode kernel, how k-splits are summed. Default (neither): through a thread-block cluster (v3g) where the
  // launcher's plan picks it, except where it takes v3h's row split (HybridGemmArgs::decode_reduction = 2).
  bool cluster_reduction = false;    // the cluster wherever the plan picks it, v3h's row split never (= 1)
  bool workspace_reduction = false;  // never the cluster: partials through the workspace (= 0, the default before
                                     // session 19)
  bool row_split = false;          // decode kernel at M <= 16, the row split (v3h; v3i since session 24, two load
                                   // batches in flight per warp): 4-warp CTAs over the whole K, no k-split,
                                   // on every shape (HybridGemmArgs::decode_warps = 4); without it the launcher
                                   // takes it at 9..16 tokens where decode_row_split_auto says so
  bool prefill_batched = false;    // wgmma prefill kernels, v4i: one wgmma group per slab
                                   // (HybridGemmArgs::prefill_batched)
  bool one_batch = false;          // decode kernel at M <= 16: one load batch in flight per warp everywhere (v3e's
                                   // k-split, v3h's row split), the default before session 24, kept to compare end
                                   // to end (HybridGemmArgs::decode_variant = 2)
  bool prefill_sharex = false;     // every wgmma prefill launch (M > 32) as v7: persistent 2-CTA clusters sharing x
                                   // by TMA multicast (HybridGemmArgs::prefill_schedule = 3; session 28), reading
                                   // the weight's prefill_image where it has one (SS form, 1.10–1.27× the default
                                   // at f ≥ 0.9; v8 with its prefill_order where some tile is dense, session 32),
                                   // else its blob through registers (0.92–1.09×)
};
void set_hybrid_kernel_options(const HybridKernelOptions& o);
HybridKernelOptions hybrid_kernel_options();
// "plain" (every option off), or pdl, cluster or workspace, rows, batched, onebatch and sharex joined by '+' (any
// order, each once; what bench_model --hybrid-opts and patchllm --hybrid-kernel take); throws InvalidArgument else.
// to_string gives the canonical order.
HybridKernelOptions parse_hybrid_kernel_options(const std::string& s);
std::string to_string(const HybridKernelOptions& o);

}  // namespace patchllm
