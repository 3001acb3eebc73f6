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
  bool pdl = false;  // programmatic dependent launch (sm_90 code): may start during the previous kernel
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
  bool pdl = false;  // programmatic dependent launch (sm_90 code): may start during the previous kernel
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
  bool pdl = false;  // programmatic dependent launch (sm_90 code): may start during the previous kernel
};
int launch_silu_mul(const SiluMulArgs& a);

// Attention of one new token per row over a static decode step's KV cache (flash-decoding): q [B, H, D] contiguous
// (the new token's heads, as rope_qk_to_cache returns them), caches [B, Hk, capacity, D] contiguous with H a multiple
// of Hk (grouped-query: query head h reads kv head h / (H / Hk)). Row b attends to the slots s of [0, span) with
// lo_b <= s <= pos, where lo_b = pad[b] (0 without pad) and, with window > 0, at least pos - window + 1; no other
// slot is read. score = scale · q·k (then softcap · tanh(score / softcap) when softcap > 0), softmax and the weighted
// sum of v in fp32, y [B, H·D] (token-major, as the o-projection reads it) rounded once. A row that sees no slot gets
// zeros. bf16 and fp16, D in {64, 128, 256}. Each CTA takes up to 8 query heads of one kv head over one chunk of slots
// (k/v read once for the group); with several chunks a second kernel merges the chunks' partial softmaxes from
// `workspace` (decode_attention_workspace floats). Both kernels are PDL-launched with pdl, like the others here.
struct DecodeAttnArgs {
  int dtype = LAYER_BF16;
  int64_t B = 0, H = 0, Hk = 0, D = 0;
  int64_t capacity = 0, span = 0;
  const void* q = nullptr;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  const int64_t* pos = nullptr;  // [1] on the device
  const int64_t* pad = nullptr;  // [B] on the device, or null
  int64_t window = 0;
  float scale = 1.f, softcap = 0.f;
  void* y = nullptr;
  float* workspace = nullptr;
  // Slots per CTA: a multiple of 64 up to 1024 and of the slots one round of loads covers
  // (decode_attention_keys_per_round: 128 with D = 64, 64 with 128, 32 with 256; half that with 8 heads per CTA);
  // 0: decode_attention_chunk's choice.
  int64_t chunk = 0;
  // Query heads per CTA, 1, 2, 4 or 8 (k/v are read once per CTA, so fewer heads per CTA read them more often but
  // give more CTAs); 0: decode_attention_heads' choice.
  int64_t heads_per_cta = 0;
  void* stream = nullptr;
  bool pdl = false;
};
// Whether the kernel takes these sizes (dtype, D, H / Hk, span, chunk, heads per CTA).
bool decode_attention_supported(const DecodeAttnArgs& a);
// The query heads per CTA, the slots one round of a CTA's loads covers, the chunk a launch with these arguments uses,
// and the fp32 workspace it needs (0 with one chunk).
int64_t decode_attention_heads(const DecodeAttnArgs& a);
int64_t decode_attention_keys_per_round(const DecodeAttnArgs& a);
int64_t decode_attention_chunk(const DecodeAttnArgs& a);
int64_t decode_attention_workspace(const DecodeAttnArgs& a);
int launch_decode_attention(const DecodeAttnArgs& a);
// The SM count these rules assume: the current device's, or an H100's 132 without one.
int layer_kernels_sm_count();

const char* layer_kernel_error_string(int err);

}  // namespace patchllm
