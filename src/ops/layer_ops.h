// Decoder-layer building blocks besides the linears: RMSNorm, the residual add fused into the next norm, RoPE and the
// SwiGLU product. Each *_fused function runs one CUDA kernel (src/ops/layer_kernels.h) on a CUDA tensor without
// autograd, and otherwise (CPU, grad needed, a CPU-only LibTorch, or set_fused_layer_ops(false)) the plain LibTorch
// reference beside it, which also is what the kernels are tested against (tests/test_ops_layer.cc).
#pragma once
#include <torch/torch.h>

#include <utility>

namespace patchllm {

// References (LibTorch compositions, as HF computes them).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps);  // LLaMA: w · cast(x̂), x̂ in fp32
// Gemma: normalised and scaled by (1 + w), both in fp32, then cast back.
torch::Tensor rms_norm_gemma(const torch::Tensor& x, const torch::Tensor& w, double eps);
// HF rotate_half RoPE: x [B, H, T, D], cos/sin [1 or B, T, D].
torch::Tensor rope_apply(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

enum class NormStyle { Llama, Gemma };

// rms_norm / rms_norm_gemma of x [..., C] (last dim contiguous, w [C]).
torch::Tensor rms_norm_fused(const torch::Tensor& x, const torch::Tensor& w, double eps, NormStyle style);
// {h + r, norm(h + r)}: the residual stream's add (rounded to the dtype, as `h + r`) and the next layer norm.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm_fused(const torch::Tensor& h, const torch::Tensor& r,
                                                           const torch::Tensor& w, double eps, NormStyle style);
// RoPE of q and k given as [B, T, heads, D] (D contiguous; e.g. views into a fused q|k|v output), cos/sin
// [1 or B, T, D]: rope_apply in the [B, T, heads, D] layout, both in one launch. Returns contiguous [B, T, heads, D].
std::pair<torch::Tensor, torch::Tensor> rope_qk_fused(const torch::Tensor& q, const torch::Tensor& k,
                                                      const torch::Tensor& cos, const torch::Tensor& sin);
// rope_qk_fused for the static decode step: the rotated k and v ([B, T, kv_heads, D] like k) are written into the
// caches [B, kv_heads, capacity, D] at slots pos [T] (int64, on the device), in the same launch on CUDA (the
// reference: index_copy_). Returns the rotated q [B, T, heads, D].
torch::Tensor rope_qk_to_cache(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor& k_cache,
                               torch::Tensor& v_cache, const torch::Tensor& pos);
// silu(g) · u (SwiGLU), g and u of one shape [..., I] with the last dim contiguous (halves of a fused gate|up).
torch::Tensor silu_mul_fused(const torch::Tensor& g, const torch::Tensor& u);

// Attention of the static decode step's one new token per row (DecodeGraph): q [B, 1, H, D] (rope_qk_to_cache's
// output), caches [B, Hk, capacity, D] with H a multiple of Hk, pos int64 [1] and pad int64 [B] (or undefined) on the
// device. Row b sees the slots s < span with pad[b] <= s <= pos and, with window > 0, pos - s < window. Scores are
// scale · q·k, soft-capped as softcap · tanh(score / softcap) when softcap > 0. Returns [B, 1, H·D] in q's dtype
// (token-major, as the o-projection reads it); a row that sees no slot gets zeros.
// decode_attention_ref: in fp32 over the span, masked, then cast (the reference the kernel is tested against).
torch::Tensor decode_attention_ref(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                                   const torch::Tensor& pos, const torch::Tensor& pad, int64_t span, int64_t window,
                                   double scale, double softcap);
// Whether decode_attention_fused runs its kernel (layer_kernels.h launch_decode_attention: reads only the visible
// slots, one launch, or two for long spans) for this q and cache: CUDA, bf16 or fp16, D in {64, 128, 256}, no
// gradient, contiguous, the fused ops and set_fused_decode_attention on. Elsewhere the model keeps its SDPA path.
bool decode_attention_fusable(const torch::Tensor& q, const torch::Tensor& k_cache);
// The kernel where decode_attention_fusable holds, else decode_attention_ref.
torch::Tensor decode_attention_fused(const torch::Tensor& q, const torch::Tensor& k_cache,
                                     const torch::Tensor& v_cache, const torch::Tensor& pos, const torch::Tensor& pad,
                                     int64_t span, int64_t window, double scale, double softcap);

// Process-wide switches (default on) so a benchmark can time the references in the same process; the second keeps
// the decode-attention kernel alone out (the model's static decode step then attends through SDPA).
void set_fused_layer_ops(bool on);
bool fused_layer_ops();
void set_fused_decode_attention(bool on);
bool fused_decode_attention();

}  // namespace patchllm
