// LLaMA-family decoder on LibTorch: embeddings, RMSNorm, RoPE (incl. llama3 scaling), grouped-query attention
// (fused SDPA on LibTorch >= 2.0, an explicit softmax fallback otherwise), SwiGLU MLP, tied/untied head, KV cache,
// left-padded batches. Gemma 3 adds a scaled embedding, (1 + w) norms, QK-norm, pre/post norms, GeGLU and
// interleaved sliding-window/global layers with their own RoPE bases. CPU computes in fp32, CUDA in bf16 (or fp16).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/linear.h"

namespace patchllm {

struct DecoderLayer {
  // [hidden]. post_attn_norm is HF's post_attention_layernorm: the pre-MLP norm in LLaMA, the norm of the
  // attention output in Gemma 3.
  torch::Tensor input_norm, post_attn_norm;
  torch::Tensor pre_ffn_norm, post_ffn_norm;  // [hidden], Gemma 3 only
  torch::Tensor q_norm, k_norm;               // [head_dim], Gemma 3 only
  LinearPtr q, k, v, o, gate, up, down;
};

// Per-layer K/V: [B, n_kv_heads, capacity, head_dim]; `length` tokens are filled.
struct KVCache {
  std::vector<torch::Tensor> k, v;
  int64_t length = 0;
  int64_t capacity = 0;
};

// What every layer of one forward call shares: RoPE tables for the positions and the additive attention mask.
struct LayerContext {
  torch::Tensor cos, sin;   // [B or 1, T, head_dim], compute dtype
  torch::Tensor attn_bias;  // [B or 1, 1, T, T_total] additive (0 / -inf), or undefined for plain causal
  bool causal_only = true;  // true: no padding and no cache offset, SDPA may use is_causal
  // The same for Gemma 3's sliding-window layers (own RoPE base and window); undefined for other models.
  torch::Tensor cos_local, sin_local, attn_bias_local;
  bool causal_only_local = true;
};

struct ModelLoadOptions {
  torch::Device device = torch::kCPU;
  c10::ScalarType dtype = torch::kFloat32;  // compute dtype
};

class Model {
 public:
  static std::unique_ptr<Model> load(const std::string& dir, const ModelLoadOptions& opt = {});

  // tokens [B, T] int64. With a cache, positions continue at cache->length and K/V are appended.
  // attn_mask [B, T_total] (1 = token, 0 = padding; T_total = cache length + T), optional.
  // Returns logits [B, T, vocab] in fp32.
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr, const torch::Tensor& attn_mask = {});

  // Pieces for layer-by-layer jobs (calibration, pruning, mask learning with per-layer checkpointing).
  torch::Tensor embed_tokens(const torch::Tensor& tokens) const;  // [B, T, hidden] compute dtype
  LayerContext make_context(int64_t batch, int64_t seq, int64_t past = 0, const torch::Tensor& attn_mask = {}) const;
  torch::Tensor layer_forward(int64_t i, const torch::Tensor& h, const LayerContext& ctx, KVCache* cache = nullptr);
  torch::Tensor head(const torch::Tensor& h) const;  // final norm + LM head, fp32 logits

  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // Every decoder linear as (HF parameter name of its weight, pointer to its slot), in layer order q k v o gate up down.
  std::vector<std::pair<std::string, LinearPtr*>> linears();
  int64_t num_parameters() const;

  ModelConfig config;
  torch::Tensor embed, final_norm, lm_head;  // lm_head is embed when tied
  std::vector<DecoderLayer> layers;
  torch::Tensor inv_freq;        // [head_dim/2] fp32, rope scaling applied
  torch::Tensor inv_freq_local;  // Gemma 3 sliding layers (rope_local_base_freq), else undefined
  torch::Device device = torch::kCPU;
  c10::ScalarType dtype = torch::kFloat32;
  std::string dir;
};

// Building blocks, public so tests can check them against plain references.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps);  // computed in fp32
// Gemma: normalised and scaled by (1 + w), both in fp32, then cast back.
torch::Tensor rms_norm_gemma(const torch::Tensor& x, const torch::Tensor& w, double eps);
torch::Tensor rope_inv_freq(const ModelConfig& c);  // [head_dim/2] fp32 (rope_theta, rope_scaling)
torch::Tensor rope_apply(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);  // x [B,H,T,D]
// q [B,H,T,D], k/v [B,Hkv,S,D], bias additive [.,1,T,S] or undefined with causal=true.
// scale 0 = 1/sqrt(D); softcap > 0: scores = softcap * tanh(scores / softcap) before the mask (Gemma 2 style).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& bias, bool causal, double scale = 0, double softcap = 0);

// The HF names of the seven decoder linears, in the order Model::linears() returns them.
const std::vector<std::string>& decoder_linear_names();  // "self_attn.q_proj", ..., "mlp.down_proj"

// Peak GiB the CUDA caching allocator handed out on d since the last reset (reset = true starts a new window);
// 0 on the CPU or with a CPU-only LibTorch.
double cuda_peak_gib(const torch::Device& d, bool reset);

}  // namespace patchllm
