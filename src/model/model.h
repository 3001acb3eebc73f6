// LLaMA-family decoder on LibTorch: embeddings, RMSNorm, RoPE (incl. llama3 scaling), grouped-query attention
// (fused SDPA on LibTorch >= 2.0, an explicit softmax fallback otherwise), SwiGLU MLP, tied/untied head, KV cache,
// left-padded batches. Gemma 3 adds a scaled embedding, (1 + w) norms, QK-norm, pre/post norms, GeGLU and
// interleaved sliding-window/global layers with their own RoPE bases. CPU computes in fp32, CUDA in bf16 (or fp16).
#pragma once
#include <torch/torch.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/linear.h"
#include "ops/layer_ops.h"

namespace patchllm {

// Decoder linears sharing one input, computed by a single linear (model_fuse_projections): q|k|v or gate|up.
// y = linear(x): [..., sum of the parts' out_features], the parts' rows in order; the parts' weights (dense) or blobs
// (packed) are views into the fused one. Used only while every slot still holds the object it was built from with the
// same tensors (mask learning, pruning and packing replace slots or weights; the unfused path runs then).
struct FusedLinear {
  LinearPtr linear;                    // null: not fused
  std::vector<const Linear*> parts;    // the slot objects it was built from, in order
  std::vector<torch::Tensor> tensors;  // per part its weight (dense) or blob (packed), then its bias, at fusion
  std::vector<int64_t> sizes;          // out_features per part

  bool current(std::initializer_list<const LinearPtr*> slots) const;
  std::vector<torch::Tensor> forward(const torch::Tensor& x) const;  // one output per part, narrowed on the last dim
};

struct DecoderLayer {
  // [hidden]. post_attn_norm is HF's post_attention_layernorm: the pre-MLP norm in LLaMA, the norm of the
  // attention output in Gemma 3.
  torch::Tensor input_norm, post_attn_norm;
  torch::Tensor pre_ffn_norm, post_ffn_norm;  // [hidden], Gemma 3 only
  torch::Tensor q_norm, k_norm;               // [head_dim], Gemma 3 only
  LinearPtr q, k, v, o, gate, up, down;
  FusedLinear qkv, gate_up;  // model_fuse_projections; empty otherwise
};

// Per-layer K/V: [B, n_kv_heads, capacity, head_dim]; `length` tokens are filled.
struct KVCache {
  std::vector<torch::Tensor> k, v;
  int64_t length = 0;
  int64_t capacity = 0;
  // Row b alone ([1, ...] views sharing this cache's memory) with `length` slots counted as filled: a forward into it
  // writes that row's slots from there on (continuous batching puts a new prompt into one row).
  KVCache row(int64_t b, int64_t length) const {
    KVCache r;
    for (size_t i = 0; i < k.size(); ++i) {
      r.k.push_back(k[i].narrow(0, b, 1));
      r.v.push_back(v[i].narrow(0, b, 1));
    }
    r.length = length;
    r.capacity = capacity;
    return r;
  }
};

// What every layer of one forward call shares: RoPE tables for the positions and the additive attention mask.
struct LayerContext {
  torch::Tensor cos, sin;   // [B or 1, T, head_dim], compute dtype
  torch::Tensor attn_bias;  // [B or 1, 1, T, T_total] additive (0 / -inf), or undefined for plain causal
  bool causal_only = true;  // true: no padding and no cache offset, SDPA may use is_causal
  // The same for Gemma 3's sliding-window layers (own RoPE base and window); undefined for other models.
  torch::Tensor cos_local, sin_local, attn_bias_local;
  bool causal_only_local = true;
  // Static decode (DecodeGraph): int64 [1] on the device, the cache slot of the single new token. K/V are written
  // there (rope_qk_to_cache) and attention runs over the whole cache capacity (attn_bias masks the unused slots; the
  // decode-attention kernel, where it runs, reads only the visible ones), so no shape depends on host state.
  // Undefined: K/V appended at cache->length.
  torch::Tensor cache_pos;
  // With cache_pos: attention reads slots [0, cache_span) only (> the position; attn_bias covers that span); 0: the
  // whole capacity.
  int64_t cache_span = 0;
  // With cache_pos: int64 [B] on the device, each row's left padding (the slots before it are masked), or undefined.
  // Where the decode-attention kernel runs (decode_attention_fusable), it reads this and cache_pos instead of
  // attn_bias.
  torch::Tensor cache_pad;
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
  // The same up to the last decoder layer: [B, T, hidden] before the final norm, for callers that apply head() to a
  // few rows or in chunks (perplexity, zero-shot scoring).
  torch::Tensor hidden(const torch::Tensor& tokens, KVCache* cache = nullptr, const torch::Tensor& attn_mask = {});
  // forward() for generation: the logits of the last position only, [B, vocab] fp32 (the LM head over every position
  // would cost B * T * vocab * 4 bytes, 3 GB for a batch of 16 prompts of 400 tokens at a 128K vocabulary).
  torch::Tensor forward_last(const torch::Tensor& tokens, KVCache* cache = nullptr,
                             const torch::Tensor& attn_mask = {});
  // Continuous batching's refill: a new prompt ids [1, n] into row `row` of `cache` at slots [slot, slot + n), run as
  // a fresh causal prefill (positions 0 .. n-1, attending over those slots only: the row's earlier slots are its
  // padding). The forward is right-padded to a bucketed length (refill_bucket) with the prompt's last id, which
  // causal attention keeps away from the prompt, so prompts of many lengths share a few shapes; the padding's K/V go
  // to slots [slot + n, slot + bucket), which the caller must not read before writing them (they are the row's
  // future slots). Leaves cache.length alone. Returns the last prompt token's logits [1, vocab] fp32.
  torch::Tensor prefill_row(const torch::Tensor& ids, KVCache& cache, int64_t row, int64_t slot);

  // Pieces for layer-by-layer jobs (calibration, pruning, mask learning with per-layer checkpointing).
  torch::Tensor embed_tokens(const torch::Tensor& tokens) const;  // [B, T, hidden] compute dtype
  // The same without the host-side range check (ids must be valid int64 on the device): static decode steps.
  torch::Tensor embed_lookup(const torch::Tensor& tokens) const;
  LayerContext make_context(int64_t batch, int64_t seq, int64_t past = 0, const torch::Tensor& attn_mask = {}) const;
  torch::Tensor layer_forward(int64_t i, const torch::Tensor& h, const LayerContext& ctx, KVCache* cache = nullptr);
  // The same with the residual stream's last add left to the caller: the layer's input is h + delta (delta
  // undefined: h), its output first + second. Chained layers pass the pair on, so each add fuses into the next
  // layer's input norm (add_rms_norm_fused): one kernel fewer per layer on CUDA, the same numbers.
  std::pair<torch::Tensor, torch::Tensor> layer_forward_split(int64_t i, const torch::Tensor& h,
                                                              const torch::Tensor& delta, const LayerContext& ctx,
                                                              KVCache* cache = nullptr);
  torch::Tensor head(const torch::Tensor& h) const;  // final norm + LM head, fp32 logits

  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // Every decoder linear as (HF parameter name of its weight, pointer to its slot), in layer order q k v o gate up
  // down.
  std::vector<std::pair<std::string, LinearPtr*>> linears();
  int64_t num_parameters() const;

  ModelConfig config;
  torch::Tensor embed, final_norm, lm_head;  // lm_head is embed when tied
  std::vector<DecoderLayer> layers;
  torch::Tensor inv_freq;        // [head_dim/2] fp32, rope scaling applied
  torch::Tensor inv_freq_local;  // Gemma 3 sliding layers (rope_local_base_freq), else undefined
  torch::Tensor embed_scale;     // Gemma 3: sqrt(hidden) in the compute dtype, 0-dim on the device; else undefined
  torch::Device device = torch::kCPU;
  c10::ScalarType dtype = torch::kFloat32;
  std::string dir;
};

// Per decoder layer, replaces q,k,v and gate,up by one fused linear each (one GEMM / one hybrid kernel launch) when
// the parts are all plain Linear (same dtype and device) or all PackedHybridLinear (same dtype, tile geometry and
// in_features, every part but the last a whole number of row blocks). The parts' weights become views into the
// fused weight, so no memory is duplicated; other layers stay unfused. Returns the number of fused groups.
int model_fuse_projections(Model& model);

// The length Model::prefill_row runs a refill of n prompt tokens at: n rounded up to a multiple of a quarter of the
// power of two at or below it (at least 16), so at most 4 lengths per octave and fewer than max(16, n / 4) pads.
int64_t refill_bucket(int64_t n);
// The length prefill_row runs n tokens at with `room` slots from its first one: refill_bucket(n), cut at the room.
int64_t refill_length(int64_t n, int64_t room);

// While it lives, PyTorch's cuDNN attention is kept out of SDPA's choice on CUDA (the previous setting comes back
// after). Generation runs under it: every new prompt length is a new attention shape, and cuDNN builds a plan per
// shape, ~45 ms on an H100 against ~8 ms for the whole batch-1 prefill of a 7B model (docs/BENCHMARKS.md §4, session
// 23); flash and memory-efficient attention have no plan. So does zero-shot scoring (a new length nearly every
// batch). Fixed-shape work (eval ppl, training) keeps cuDNN, which is faster on long sequences once its plan exists.
// PATCHLLM_SDPA_CUDNN=1 disables the guard, for comparisons. A no-op on the CPU and with LibTorch before 2.5.
class SdpaCudnnOff {
 public:
  explicit SdpaCudnnOff(const torch::Device& d);
  ~SdpaCudnnOff();
  SdpaCudnnOff(const SdpaCudnnOff&) = delete;
  SdpaCudnnOff& operator=(const SdpaCudnnOff&) = delete;
  bool active() const { return _restore; }

 private:
  bool _restore = false;  // cuDNN SDPA was on and is off until the destructor
};

// Building blocks, public so tests can check them against plain references.
// (rms_norm, rms_norm_gemma, rope_apply and their fused forms: ops/layer_ops.h.)
torch::Tensor rope_inv_freq(const ModelConfig& c);  // [head_dim/2] fp32 (rope_theta, rope_scaling)
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
