// Raw launchers of the fused decoder-layer kernels (src/ops/layer_kernels.cu). Plain C++: no LibTorch, no CUDA
// headers; the LibTorch front, with the reference each kernel is tested against, is src/ops/layer_ops.h.
// Why: a decode step of a LLaMA layer is ~40 small LibTorch kernels around 4 GEMMs (RMSNorm alone is 8: cast,
// square, mean, add, rsqrt, mul, cast, mul). At batch 1–16 each costs a launch, not bandwidth, so one kernel per
// norm / residual-add + norm / RoPE of q and k / SiLU·mul keeps the step's time in the GEMMs.
// Every kernel rounds where the LibTorch composition rounds (each op's result to the dtype), so the outputs match the
// reference up to the fp32 summation order of the norm.
#pragma once
#include <cstdint>

namespace patchllm {

enum LayerDType : int { LAYER_F32 = 0, LAYER_BF16 = 1, LAYER_F16 = 2 };

// A matrix of `rows` rows of `cols` contiguous elements whose row r starts at
// (r / inner) · outer_stride + (r % inner) · inner_stride elements from `data`: a [.., inner, cols] view such as the
// heads of a fused q|k|v output.
struct LayerRows {
  const void* data = nullptr;
  int64_t inner = 1, outer_stride = 0, inner_stride = 0;
};

// y = RMSNorm(x) · w per row, the sum of squares in fp32. gemma = false (LLaMA): w · cast(x̂); true (Gemma):
// cast(x̂ · (1 + w)). With residual.data set, x + residual is first rounded to the dtype, written to sum_out, and
// normalised (the residual stream's add fused into the next norm).
struct RmsNormArgs {
  int dtype = LAYER_BF16;
  int64_t rows = 0, cols = 0;
  LayerRows x, residual;
  void* sum_out = nullptr;  // [rows, cols] contiguous, with residual only
  const void* w = nullptr;  // [cols]
  void* y = nullptr;        // [rows, cols] contiguous
  float eps = 1e-6f;
  bool gemma = false;
  void* stream = nullptr;  // cudaStream_t
};
int launch_rms_norm(const RmsNormArgs& a);

// RoPE (HF rotate_half) of q and k in one launch: x [B, T, heads, D] with D contiguous, cos/sin [1 or B, T, D]
// contiguous -> y [B, T, heads, D] contiguous. out[i] = x[i]·cos[i] − x[i+D/2]·sin[i], out[i+D/2] =
// x[i+D/2]·cos[i+D/2] + x[i]·sin[i+D/2], each product and the sum rounded to the dtype.
struct RopeTensor {
  const void* x = nullptr;
  int64_t heads = 0, sb = 0, st = 0, sh = 0;  // strides of x in elements
  void* y = nullptr;
};
// With k_cache set, rotated k goes to k_cache instead of k.y, and v (same shape as k, not rotated) to v_cache, both
// [B, k.heads, capacity, D] contiguous at slot pos[t] (int64 on the device; out-of-range slots are skipped): the
// static decode step's cache update in the same launch.
struct RopeArgs {
  int dtype = LAYER_BF16;
  int64_t B = 0, T = 0, D = 0;
  RopeTensor q, k;  // k.heads = 0: q only
  const void* cos = nullptr;
  const void* sin = nullptr;
  bool cos_per_batch = false;  // [B, T, D], else [1, T, D]
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  RopeTensor v;  // v.x with the strides; v.heads = k.heads
  const int64_t* pos = nullptr;
  int64_t capacity = 0;
  void* stream = nullptr;
};
int launch_rope(const RopeArgs& a);

// y = cast(silu(g)) · u elementwise (the SwiGLU product), g and u rows of `cols` contiguous elements at row strides
// gs / us (halves of a fused gate|up output), y [rows, cols] contiguous.
struct SiluMulArgs {
  int dtype = LAYER_BF16;
  int64_t rows = 0, cols = 0;
  const void* g = nullptr;
  const void* u = nullptr;
  int64_t gs = 0, us = 0;
  void* y = nullptr;
  void* stream = nullptr;
};
int launch_silu_mul(const SiluMulArgs& a);

// Attention of one new token per sequence over a KV cache (the static decode step): q [B, 1, heads, D] contiguous,
// caches [B, kv_heads, capacity, D] contiguous (heads a multiple of kv_heads: grouped-query), keys at slots
// lo..pos with pos = *pos_dev and lo = max(0, pos − window + 1) (window 0: lo = 0), so only the filled part of the
// cache is read. scores = scale · q·k, softcap > 0: softcap · tanh(scores / softcap). y [B, 1, heads, D] contiguous
// (the token-major layout the o projection takes, no transpose copy). Flash-decoding: the slots split into chunks of
// DECODE_ATTN_CHUNK over grid.y = ceil(capacity / chunk) blocks (fixed for a capacity, so a CUDA graph can hold the
// launch; blocks past pos exit), partial (max, sum, acc) per chunk in `partial`, then one combine launch; with one
// chunk the single launch writes y. D % 32 == 0, D ≤ 256; fp32 accumulation.
constexpr int DECODE_ATTN_CHUNK = 256;
struct DecodeAttnArgs {
  int dtype = LAYER_BF16;
  int64_t B = 0, heads = 0, kv_heads = 0, D = 0, capacity = 0;
  const void* q = nullptr;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  const int64_t* pos = nullptr;
  int64_t window = 0;
  float scale = 1, softcap = 0;
  float* partial = nullptr;  // [B · heads, chunks, D + 2] fp32 when chunks > 1
  void* y = nullptr;
  void* stream = nullptr;
};
inline int64_t decode_attn_chunks(int64_t capacity) { return (capacity + DECODE_ATTN_CHUNK - 1) / DECODE_ATTN_CHUNK; }
int launch_decode_attention(const DecodeAttnArgs& a);

const char* layer_kernel_error_string(int err);

}  // namespace patchllm
