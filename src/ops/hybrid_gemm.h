// Raw launcher of the hybrid dense/2:4 GEMM kernels (src/ops/hybrid_gemm.cu). Plain C++: no LibTorch, no CUDA
// headers, so the LibTorch front (hybrid_linear.cc) and the benchmarks both call it. Launchers check shapes and
// return a HybridStatus; only the op front turns codes into exceptions.
#pragma once
#include <cstddef>
#include <cstdint>

namespace patchllm {

enum HybridStatus : int {
  HYBRID_OK = 0,
  HYBRID_ERR_SHAPE = 1,      // M, N, K or tile size not supported by the kernels
  HYBRID_ERR_ALIGN = 2,      // a pointer is not 16-byte aligned (prefill_order: 4-byte), or K % 8 != 0
  HYBRID_ERR_ARCH = 3,       // device older than sm_80, or kernel 1/3 asked for on sm_8x (they need sm_90)
  HYBRID_ERR_WORKSPACE = 4,  // workspace missing or too small
  HYBRID_ERR_CUDA = 5,       // a CUDA runtime call failed; cuda_error holds its code
};

// y[M, N] = x[M, K] · W[N, K]ᵀ, W packed (hybrid_format.h), 128×128 tiles. x, y, blob, kinds, offsets on the device.
struct HybridGemmArgs {
  const void* x = nullptr;        // [M, K] bf16/fp16, row-major, K % 8 == 0
  void* y = nullptr;              // [M, N] same dtype, row-major
  int64_t M = 0, N = 0, K = 0;
  const uint8_t* blob = nullptr;  // packed tiles
  const uint8_t* kinds = nullptr;       // [row_blocks * col_tiles]
  const int64_t* offsets = nullptr;     // [row_blocks * col_tiles + 1]
  int tile_rows = 128, tile_cols = 128;
  bool bf16 = true;               // false: fp16
  void* workspace = nullptr;      // hybrid_gemm_workspace_bytes(); zero-filled once when allocated, kept clean after
  size_t workspace_bytes = 0;
  void* stream = nullptr;         // cudaStream_t; null = legacy default stream
  int grid = 0;                   // persistent kernel only: CTAs; 0 = one per SM
  int kernel = 0;                 // 0 = auto (split-K decode kernel for M <= 32, above it the wgmma prefill kernel
                                  // on sm_90, else the persistent one; on sm_8x the split-K kernel for every M),
                                  // 1 = persistent mma.sync bulk-copy kernel (sm_90),
                                  // 2 = split-K decode kernel (any M, 64-token chunks), 3 = wgmma prefill (sm_90a)
  int prefill_bn = 0;             // wgmma prefill kernel: tokens per CTA (128 or 256); 0 = by M and N
  int prefill_schedule = 0;       // wgmma prefill: 0 = auto, 1 = one CTA per output tile, 2 = stream-K (one CTA per
                                  // SM, equal shares of (tile, 64-K slab) units, split tiles reduced in the workspace),
                                  // 3 = v7: persistent 2-CTA clusters sharing x by TMA multicast (256 tokens per
                                  // unit; prefill_bn and prefill_batched ignored; session 28)
  const uint8_t* prefill_image = nullptr;  // prefill_schedule 3: the blob's prefill image (hybrid_format.h), read as
                                           // the wgmma A operand by descriptor (SS); null = the blob through
                                           // registers (RS)
  const uint32_t* prefill_order = nullptr;  // prefill_schedule 3 with prefill_image: hybrid_prefill_order_raw's
                                            // table (hybrid_format.h). Where given and prefill_all_sparse is not
                                            // set, v8 runs instead of v7: each row-block pair's all-2:4 slabs first
                                            // in five 2:4-sized stages, the rest after them in four (sessions 31-32)
  int prefill_tail = 0;           // v8: 0 = the library's default (hybrid_gemm.cu PREFILL_TAIL_DEFAULT), 1 = whole
                                  // units only (cluster c: units c, c + G, ...), 2 = the last waves' units cut into
                                  // even shares over the clusters, the cut units' partial sums added through the
                                  // workspace (stream-K tail; session 37)
  unsigned long long* prefill_timeline = nullptr;  // v8, dev probe: per CTA and unit {start, end (ns), unit}; read
                                                   // only by a build with PATCHLLM_PREFILL_TIMELINE
                                                   // (dev/kernels/prefill_timeline.cu)
  bool prefill_all_sparse = false;  // prefill_schedule 3: the caller's promise that every tile is 2:4; v7 then sizes
                                    // its stages for 2:4 slabs (five of 41 KB instead of four of 48 KB). A dense
                                    // tile under it gives wrong values (read as 2:4), never a fault
  bool prefill_batched = false;   // wgmma prefill, v4i: one wgmma group per slab, so wait_group 1 overlaps a
                                  // warpgroup's consecutive slabs (v4d's predicated block makes each wgmma its own
                                  // group). Same results bit for bit. Opt-in: on the H100 it moves v4d by -10% … +4%
                                  // (docs/benchmarks/kernels.md, "Prefill ablation").
  int decode_ctas_per_sm = 0;     // split-K kernel: target CTAs per SM (1..16) that sets the k-split; 0 = by waves
                                  // of resident CTAs (decode_split_waves; 4 was the fixed default before)
  int decode_variant = 0;         // split-K kernel at M <= 16: 0 = v3e (runs of four 2:4 k-tiles in one load batch,
                                  // hybrid_decode.cuh RUN4), and where v3h's row split over 4-warp CTAs runs, v3i
                                  // (the same with two load batches in flight per warp; session 24); at 9..16 tokens
                                  // also the k-split with two batches where decode_pipelined_k_split_auto
                                  // (hybrid_split.h) says so and decode_warps is 0; 1 = v3d (one
                                  // or two k-tiles per batch; to compare); 2 = one batch in flight everywhere: v3e,
                                  // and v3h for the 4-warp row split (the launcher of sessions 15-23, to compare);
                                  // 3 = two batches in flight
                                  // everywhere: v3i, and for the k-split's 8-warp CTAs its twin (one CTA per SM)
  int decode_reduction = 2;       // split-K kernel: how a row block's k-splits are summed. 0 = through the workspace
                                  // (partials and a counter); 1 = v3g, through a thread-block cluster (distributed
                                  // shared memory) where the waves rule's cluster split (S <= 8) costs no more
                                  // (sm_90), else the workspace, and never v3h's row split; 2 (default) = 1, except
                                  // where decode_warps 0 takes v3h's row split. Before session 19 the default was 0:
                                  // forcing 1 lost up to 12% where it displaced v3h, and 2 keeps v3h there
                                  // (docs/BENCHMARKS.md §4).
  int decode_warps = 0;           // split-K kernel, v3e at M <= 16: warps (16 weight rows each) per CTA. 8 = a whole
                                  // row block per CTA, K split by decode_plan; 2 or 4 = v3h (4: v3i unless
                                  // decode_variant 2), the row block's 8 warp
                                  // slices in 8/W CTAs, each over the whole K (no k-split, no reduction); 0 = auto:
                                  // 4 at 9..16 tokens where decode_row_split_auto (hybrid_split.h) says so and
                                  // decode_reduction != 1, else 8. Ignored elsewhere.
  bool pdl = false;               // split-K kernel on sm_90: programmatic dependent launch. The launch may start
                                  // while the previous kernel in the stream runs; it reads only the weight blob,
                                  // kinds and offsets before that kernel has finished, so those must not be written
                                  // by it. Ignored where the device code has no griddepcontrol (sm_8x builds).
};

struct HybridLaunchResult {
  int status = HYBRID_OK;
  int cuda_error = 0;             // cudaError_t when status == HYBRID_ERR_CUDA
};

// Bytes of workspace a launch with these sizes needs on the current device.
size_t hybrid_gemm_workspace_bytes(int64_t M, int64_t N, int grid = 0);
HybridLaunchResult hybrid_gemm_launch(const HybridGemmArgs& a);
// What the device code loaded for the current GPU has, probed once per process (also from inside another stream's
// CUDA-graph capture): the probe ran; the wgmma prefill kernels (built for sm_90a); sm_90 code (griddepcontrol for
// PDL, clusters). The launcher uses each only where it is there. 0: the probe could not run.
constexpr int HYBRID_CODE_RAN = 1, HYBRID_CODE_WGMMA = 2, HYBRID_CODE_SM90 = 4;
int hybrid_device_code();
const char* hybrid_status_string(int status);
const char* hybrid_cuda_error_string(int cuda_error);

}  // namespace patchllm
