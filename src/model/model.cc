#include "model/model.h"

#include <torch/version.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "model/packed_linear.h"

#ifdef PATCHLLM_TORCH_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace patchllm {

// Peak bytes the CUDA caching allocator handed out since the last reset (0 on CPU or without CUDA LibTorch).
double cuda_peak_gib(const torch::Device& d, bool reset) {
#ifdef PATCHLLM_TORCH_HAS_CUDA
  if (d.is_cuda()) {
    if (reset) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index() < 0 ? 0 : d.index());
    auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index() < 0 ? 0 : d.index());
    return double(st.allocated_bytes[0].peak) / (1024.0 * 1024 * 1024);  // [0]: StatType::AGGREGATE
  }
#endif
  (void)d;
  (void)reset;
  return 0;
}

const std::vector<std::string>& decoder_linear_names() {
  static const std::vector<std::string> names = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                 "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                 "mlp.down_proj"};
  return names;
}

torch::Tensor rope_inv_freq(const ModelConfig& c) {
  const int64_t d = c.head_dim;
  auto idx = torch::arange(0, d, 2, torch::kFloat64) / static_cast<double>(d);
  auto inv = 1.0 / torch::pow(torch::full({}, c.rope_theta, torch::kFloat64), idx);
  const auto& rs = c.rope_scaling;
  if (rs.type == "linear") {
    inv = inv / rs.factor;
  } else if (rs.type == "llama3") {
    // transformers' _compute_llama3_parameters: low frequencies divided by factor, high kept, smooth in between.
    const double old_ctx = static_cast<double>(rs.original_max_position);
    const double low_wl = old_ctx / rs.low_freq_factor, high_wl = old_ctx / rs.high_freq_factor;
    auto wavelen = 2 * M_PI / inv;
    auto scaled = torch::where(wavelen > low_wl, inv / rs.factor, inv);
    auto smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    auto medium = (wavelen >= high_wl).logical_and(wavelen <= low_wl);
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv.to(torch::kFloat32);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& bias, bool causal, double scale, double softcap) {
  const int64_t groups = q.size(1) / k.size(1);
  if (groups > 1 && q.size(2) == 1 && (bias.defined() ? bias.size(1) == 1 : !causal)) {
    // One query token (decode): a kv head's `groups` query heads become `groups` query rows over that head, so k/v
    // are read as they are instead of being copied `groups` times below, a copy of the whole cache every step.
    auto rows = attention(q.reshape({q.size(0), k.size(1), groups, q.size(3)}), k, v, bias, false, scale, softcap);
    return rows.reshape({q.size(0), q.size(1), 1, q.size(3)});
  }
  auto kk = k, vv = v;
  if (groups > 1) {  // grouped-query attention: each kv head serves `groups` query heads
    kk = k.unsqueeze(2)
             .expand({k.size(0), k.size(1), groups, k.size(2), k.size(3)})
             .reshape({k.size(0), k.size(1) * groups, k.size(2), k.size(3)});
    vv = v.unsqueeze(2)
             .expand({v.size(0), v.size(1), groups, v.size(2), v.size(3)})
             .reshape({v.size(0), v.size(1) * groups, v.size(2), v.size(3)});
  }
  const double default_scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  if (scale <= 0) scale = default_scale;
#if TORCH_VERSION_MAJOR >= 2
  if (softcap <= 0) {
    c10::optional<at::Tensor> m;
    if (bias.defined()) m = bias.to(q.scalar_type());
#if TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 1
    if (scale != default_scale)  // SDPA takes a scale from LibTorch 2.1 on
      return at::scaled_dot_product_attention(q, kk, vv, m, 0.0, causal && !bias.defined(), scale);
#else
    if (scale != default_scale)
      return at::scaled_dot_product_attention(q * (scale / default_scale), kk, vv, m, 0.0, causal && !bias.defined());
#endif
    return at::scaled_dot_product_attention(q, kk, vv, m, 0.0, causal && !bias.defined());
  }
#endif
  // LibTorch 1.x has no fused attention, and SDPA cannot soft-cap: explicit softmax in fp32.
  auto s = torch::matmul(q.to(torch::kFloat32), kk.to(torch::kFloat32).transpose(-1, -2)) * scale;
  if (softcap > 0) s = torch::tanh(s / softcap) * softcap;
  if (bias.defined()) {
    s = s + bias.to(torch::kFloat32);
  } else if (causal) {
    const int64_t T = q.size(2), S = kk.size(2);
    auto mask = torch::ones({T, S}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(S - T + 1);
    s = s.masked_fill(mask, -std::numeric_limits<float>::infinity());
  }
  return torch::matmul(torch::softmax(s, -1), vv.to(torch::kFloat32)).to(q.scalar_type());
}

namespace {

torch::Tensor load_checked(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> shape,
                           const ModelLoadOptions& opt) {
  const auto& e = ckpt.entry(name);
  PATCHLLM_CHECK(e.shape == shape, FormatError, ckpt.files()[0], ": tensor '", name, "' has shape ",
                 c10::IntArrayRef(e.shape), ", config expects ", c10::IntArrayRef(shape));
  PATCHLLM_CHECK(e.dtype == "F32" || e.dtype == "F16" || e.dtype == "BF16", FormatError, ckpt.files()[0], ": tensor '",
                 name, "' has dtype ", e.dtype, " (expected F32, F16 or BF16)");
  return ckpt.load(name).to(opt.device, opt.dtype);
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& dir, const ModelLoadOptions& opt) {
  PATCHLLM_CHECK(dir_exists(dir), FormatError, dir, ": model directory does not exist");
  auto m = std::make_unique<Model>();
  m->dir = dir;
  m->config = config_load(dir);
  m->device = opt.device;
  m->dtype = opt.dtype;
  const ModelConfig& c = m->config;
  Checkpoint ckpt(dir);
  torch::NoGradGuard ng;
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  m->embed = load_checked(ckpt, "model.embed_tokens.weight", {c.vocab_size, H}, opt);
  m->final_norm = load_checked(ckpt, "model.norm.weight", {H}, opt);
  if (ckpt.has("lm_head.weight") && !c.tie_word_embeddings) {
    m->lm_head = load_checked(ckpt, "lm_head.weight", {c.vocab_size, H}, opt);
  } else {
    PATCHLLM_CHECK(c.tie_word_embeddings || !ckpt.has("lm_head.weight"), FormatError, dir, ": missing lm_head.weight");
    m->lm_head = m->embed;
  }
  PackedCheckpoint packed(ckpt);  // packed hybrid linears (export --format packed) replace <p>.weight
  auto linear = [&](const std::string& p, int64_t out, int64_t in) -> LinearPtr {
    torch::Tensor b;
    if (ckpt.has(p + ".bias")) b = load_checked(ckpt, p + ".bias", {out}, opt);
    if (packed.has(p)) return std::make_shared<PackedHybridLinear>(packed.load(p, out, in).to(opt.device), b);
    auto w = load_checked(ckpt, p + ".weight", {out, in}, opt);
    return std::make_shared<Linear>(w, b);
  };
  for (int64_t i = 0; i < c.num_layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    DecoderLayer L;
    L.input_norm = load_checked(ckpt, p + "input_layernorm.weight", {H}, opt);
    L.post_attn_norm = load_checked(ckpt, p + "post_attention_layernorm.weight", {H}, opt);
    if (c.is_gemma3()) {
      L.pre_ffn_norm = load_checked(ckpt, p + "pre_feedforward_layernorm.weight", {H}, opt);
      L.post_ffn_norm = load_checked(ckpt, p + "post_feedforward_layernorm.weight", {H}, opt);
      L.q_norm = load_checked(ckpt, p + "self_attn.q_norm.weight", {D}, opt);
      L.k_norm = load_checked(ckpt, p + "self_attn.k_norm.weight", {D}, opt);
    }
    L.q = linear(p + "self_attn.q_proj", c.num_heads * D, H);
    L.k = linear(p + "self_attn.k_proj", c.num_kv_heads * D, H);
    L.v = linear(p + "self_attn.v_proj", c.num_kv_heads * D, H);
    L.o = linear(p + "self_attn.o_proj", H, c.num_heads * D);
    L.gate = linear(p + "mlp.gate_proj", I, H);
    L.up = linear(p + "mlp.up_proj", I, H);
    L.down = linear(p + "mlp.down_proj", H, I);
    m->layers.push_back(std::move(L));
  }
  if (c.is_gemma3())
    m->embed_scale =
        torch::scalar_tensor(std::sqrt(static_cast<double>(H)), torch::kFloat32).to(opt.dtype).to(opt.device);
  m->inv_freq = rope_inv_freq(c).to(opt.device);
  if (!c.sliding_layers.empty()) {
    ModelConfig local = c;
    if (c.rope_local_theta > 0) local.rope_theta = c.rope_local_theta;
    local.rope_scaling = c.rope_local_scaling;
    m->inv_freq_local = rope_inv_freq(local).to(opt.device);
  }
  return m;
}

torch::Tensor Model::embed_tokens(const torch::Tensor& tokens) const {
  PATCHLLM_CHECK(tokens.dim() == 2, InvalidArgument, "tokens must be [batch, seq], got ", tokens.sizes());
  auto t = tokens.to(device, torch::kLong);
  PATCHLLM_CHECK(t.numel() == 0 || (t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < config.vocab_size),
                 InvalidArgument, "token id out of range [0, ", config.vocab_size, ")");
  return embed_lookup(t);
}

torch::Tensor Model::embed_lookup(const torch::Tensor& t) const {
  auto e = torch::embedding(embed, t);
  // Gemma scales by sqrt(hidden) rounded to the compute dtype, as HF does (bf16: sqrt(640) -> 25.25).
  // embed_scale is that value made once at load, on the device (no host-to-device copy inside a captured step).
  if (config.is_gemma3()) e = e * embed_scale;
  return e;
}

LayerContext Model::make_context(int64_t batch, int64_t seq, int64_t past, const torch::Tensor& attn_mask) const {
  LayerContext ctx;
  const int64_t S = past + seq;
  auto fopt = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  torch::Tensor pos;  // [B or 1, T]
  torch::Tensor key_ok;
  if (attn_mask.defined()) {
    PATCHLLM_CHECK(attn_mask.dim() == 2 && attn_mask.size(0) == batch && attn_mask.size(1) == S, InvalidArgument,
                   "attention mask must be [", batch, ", ", S, "], got ", attn_mask.sizes());
    key_ok = attn_mask.to(device).to(torch::kBool);
    // Left padding: positions count real tokens only, as HF generate() does.
    pos = (key_ok.to(torch::kLong).cumsum(1) - 1).clamp_min(0).narrow(1, past, seq).to(torch::kFloat32);
  } else {
    pos = torch::arange(past, S, fopt).unsqueeze(0);
  }
  auto rope = [&](const torch::Tensor& inv, torch::Tensor& cos, torch::Tensor& sin) {
    auto freqs = pos.unsqueeze(-1) * inv.view({1, 1, -1});
    auto emb = torch::cat({freqs, freqs}, -1);
    cos = emb.cos().to(dtype);
    sin = emb.sin().to(dtype);
  };
  // window 0 = plain causal. The window counts cache slots, padding included, as HF's sliding mask does.
  auto mask = [&](int64_t window, torch::Tensor& bias, bool& causal_only) {
    const bool need_mask = attn_mask.defined() || window > 0 || (past > 0 && seq > 1);
    causal_only = !need_mask && past == 0;
    if (!need_mask) return;
    auto qpos = torch::arange(past, S, torch::TensorOptions().dtype(torch::kLong).device(device)).view({-1, 1});
    auto kpos = torch::arange(0, S, torch::TensorOptions().dtype(torch::kLong).device(device)).view({1, -1});
    auto ok = kpos <= qpos;  // [T, S]
    if (window > 0) ok = ok.logical_and(qpos - kpos < window);
    ok = ok.unsqueeze(0);  // [1, T, S]
    if (key_ok.defined()) ok = ok.logical_and(key_ok.unsqueeze(1));
    // Rows with nothing to attend to (padding queries) would give NaN; let them see themselves, output is ignored.
    auto empty_row = ok.logical_not().all(-1, /*keepdim=*/true);
    ok = ok.logical_or(empty_row.logical_and(kpos == qpos));
    // In the compute dtype (0 and -inf are exact there), so attention() has no cast per layer.
    bias = torch::zeros(ok.sizes(), fopt.dtype(dtype))
               .masked_fill(ok.logical_not(), -std::numeric_limits<float>::infinity())
               .unsqueeze(1);
  };
  const bool per_layer = !config.sliding_layers.empty();  // Gemma 3: global layers have no window
  rope(inv_freq, ctx.cos, ctx.sin);
  mask(per_layer ? 0 : config.sliding_window, ctx.attn_bias, ctx.causal_only);
  if (per_layer) {
    rope(inv_freq_local, ctx.cos_local, ctx.sin_local);
    mask(config.sliding_window, ctx.attn_bias_local, ctx.causal_only_local);
  }
  return ctx;
}

namespace {

torch::Tensor gelu_act(const torch::Tensor& x, const std::string& act) {
  return act == "gelu_pytorch_tanh" ? torch::gelu(x, "tanh") : torch::gelu(x);
}

}  // namespace

torch::Tensor Model::layer_forward(int64_t i, const torch::Tensor& h, const LayerContext& ctx, KVCache* cache) {
  auto [h2, delta] = layer_forward_split(i, h, {}, ctx, cache);
  return h2 + delta;
}

std::pair<torch::Tensor, torch::Tensor> Model::layer_forward_split(int64_t i, const torch::Tensor& h_in,
                                                                   const torch::Tensor& delta, const LayerContext& ctx,
                                                                   KVCache* cache) {
  const auto& c = config;
  DecoderLayer& L = layers.at(i);
  const bool gemma = c.is_gemma3();
  const NormStyle ns = gemma ? NormStyle::Gemma : NormStyle::Llama;
  const bool local = !c.sliding_layers.empty() && c.sliding_layers.at(static_cast<size_t>(i));
  const int64_t B = h_in.size(0), T = h_in.size(1), D = c.head_dim;
  // The norms, RoPE and SwiGLU product go through ops/layer_ops.h: one kernel each on CUDA, the references elsewhere.
  torch::Tensor h, x;
  if (delta.defined()) {
    std::tie(h, x) = add_rms_norm_fused(h_in, delta, L.input_norm, c.rms_eps, ns);
  } else {
    h = h_in;
    x = rms_norm_fused(h, L.input_norm, c.rms_eps, ns);
  }
  torch::Tensor q, k, v;
  if (L.qkv.current({&L.q, &L.k, &L.v})) {  // one GEMM, outputs narrowed on the last dim
    auto y = L.qkv.forward(x);
    q = y[0], k = y[1], v = y[2];
  } else {
    q = L.q->forward(x), k = L.k->forward(x), v = L.v->forward(x);
  }
  q = q.reshape({B, T, c.num_heads, D});  // [B, T, heads, D]: views of a fused output
  k = k.reshape({B, T, c.num_kv_heads, D});
  v = v.reshape({B, T, c.num_kv_heads, D});
  if (gemma) {  // QK-norm over each head, before RoPE
    q = rms_norm_fused(q, L.q_norm, c.rms_eps, ns);
    k = rms_norm_fused(k, L.k_norm, c.rms_eps, ns);
  }
  const auto& cos = local ? ctx.cos_local : ctx.cos;
  const auto& sin = local ? ctx.sin_local : ctx.sin;
  const double scale = c.query_pre_attn_scalar > 0 ? 1.0 / std::sqrt(c.query_pre_attn_scalar) : 0.0;
  torch::Tensor a;  // attention output [B, T, heads · D]
  if (cache && ctx.cache_pos.defined()) {  // static decode: write the slot, attend over the span
    q = rope_qk_to_cache(q, k, v, cos, sin, cache->k[i], cache->v[i], ctx.cache_pos);
    const int64_t span = ctx.cache_span > 0 ? ctx.cache_span : cache->capacity;
    if (decode_attention_fusable(q, cache->k[i])) {  // reads only the visible slots, writes token-major
      const int64_t window = local || c.sliding_layers.empty() ? c.sliding_window : 0;  // as DecodeGraph's masks
      a = decode_attention_fused(q, cache->k[i], cache->v[i], ctx.cache_pos, ctx.cache_pad, span, window,
                                 scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(D)),
                                 c.attn_logit_softcapping);
    } else {  // SDPA over the span, attn_bias masking the rest
      q = q.transpose(1, 2);
      k = cache->k[i].narrow(2, 0, span);
      v = cache->v[i].narrow(2, 0, span);
    }
  } else {
    std::tie(q, k) = rope_qk_fused(q, k, cos, sin);
    q = q.transpose(1, 2);  // [B, heads, T, D]
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    if (cache) {
      PATCHLLM_CHECK(cache->length + T <= cache->capacity, InvalidArgument, "KV cache full: ", cache->length, " + ", T,
                     " > capacity ", cache->capacity);
      cache->k[i].narrow(2, cache->length, T).copy_(k);
      cache->v[i].narrow(2, cache->length, T).copy_(v);
      k = cache->k[i].narrow(2, 0, cache->length + T);
      v = cache->v[i].narrow(2, 0, cache->length + T);
    }
  }
  if (!a.defined()) {
    a = local ? attention(q, k, v, ctx.attn_bias_local, ctx.causal_only_local, scale, c.attn_logit_softcapping)
              : attention(q, k, v, ctx.attn_bias, ctx.causal_only, scale, c.attn_logit_softcapping);
    a = a.transpose(1, 2).reshape({B, T, c.num_heads * D});
  }
  auto gate_up = [&](const torch::Tensor& y) -> std::pair<torch::Tensor, torch::Tensor> {
    if (L.gate_up.current({&L.gate, &L.up})) {
      auto gu = L.gate_up.forward(y);
      return {gu[0], gu[1]};
    }
    return {L.gate->forward(y), L.up->forward(y)};
  };
  if (!gemma) {
    auto [h2, n2] = add_rms_norm_fused(h, L.o->forward(a), L.post_attn_norm, c.rms_eps, ns);
    auto [g, u] = gate_up(n2);
    return {h2, L.down->forward(silu_mul_fused(g, u))};
  }
  auto h2 = h + rms_norm_fused(L.o->forward(a), L.post_attn_norm, c.rms_eps, ns);
  auto [g, u] = gate_up(rms_norm_fused(h2, L.pre_ffn_norm, c.rms_eps, ns));
  auto m = L.down->forward(gelu_act(g, c.hidden_act) * u);
  return {h2, rms_norm_fused(m, L.post_ffn_norm, c.rms_eps, ns)};
}

torch::Tensor Model::head(const torch::Tensor& h) const {
  const NormStyle ns = config.is_gemma3() ? NormStyle::Gemma : NormStyle::Llama;
  auto logits = torch::linear(rms_norm_fused(h, final_norm, config.rms_eps, ns), lm_head).to(torch::kFloat32);
  const double cap = config.final_logit_softcapping;
  if (cap > 0) logits = torch::tanh(logits / cap) * cap;  // in fp32 (HF: compute dtype), more precise
  return logits;
}

KVCache Model::make_cache(int64_t batch, int64_t capacity) const {
  KVCache kv;
  kv.capacity = capacity;
  auto opt = torch::TensorOptions().dtype(dtype).device(device);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    kv.k.push_back(torch::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opt));
    kv.v.push_back(torch::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opt));
  }
  return kv;
}

torch::Tensor Model::hidden(const torch::Tensor& tokens, KVCache* cache, const torch::Tensor& attn_mask) {
  auto h = embed_tokens(tokens);
  const int64_t past = cache ? cache->length : 0;
  auto ctx = make_context(tokens.size(0), tokens.size(1), past, attn_mask);
  torch::Tensor delta;
  for (int64_t i = 0; i < config.num_layers; ++i) std::tie(h, delta) = layer_forward_split(i, h, delta, ctx, cache);
  if (cache) cache->length += tokens.size(1);
  return delta.defined() ? h + delta : h;
}

torch::Tensor Model::forward(const torch::Tensor& tokens, KVCache* cache, const torch::Tensor& attn_mask) {
  return head(hidden(tokens, cache, attn_mask));
}

torch::Tensor Model::forward_last(const torch::Tensor& tokens, KVCache* cache, const torch::Tensor& attn_mask) {
  auto h = hidden(tokens, cache, attn_mask);
  return head(h.narrow(1, h.size(1) - 1, 1)).select(1, 0);
}

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define PATCHLLM_SDPA_CUDNN_SWITCH 1
#endif

SdpaCudnnOff::SdpaCudnnOff(const torch::Device& d) {
#ifdef PATCHLLM_SDPA_CUDNN_SWITCH
  const char* keep = std::getenv("PATCHLLM_SDPA_CUDNN");
  if (!d.is_cuda() || (keep && std::string(keep) == "1") || !at::globalContext().userEnabledCuDNNSDP()) return;
  at::globalContext().setSDPUseCuDNN(false);
  _restore = true;
#else
  (void)d;
#endif
}

SdpaCudnnOff::~SdpaCudnnOff() {
#ifdef PATCHLLM_SDPA_CUDNN_SWITCH
  if (_restore) at::globalContext().setSDPUseCuDNN(true);
#endif
}

int64_t refill_bucket(int64_t n) {
  // A quarter of the power of two at or below n (at least 16): at most 4 shapes per octave, < max(16, n / 4) pads.
  int64_t p = 1;
  while (p * 2 <= n) p *= 2;
  const int64_t g = std::max<int64_t>(16, p / 4);
  return (n + g - 1) / g * g;
}

int64_t refill_length(int64_t n, int64_t room) { return std::min(refill_bucket(n), room); }

torch::Tensor Model::prefill_row(const torch::Tensor& ids, KVCache& cache, int64_t row, int64_t slot) {
  const int64_t n = ids.dim() == 2 ? ids.size(1) : 0;
  const int64_t B = cache.k.empty() ? 0 : cache.k[0].size(0);
  PATCHLLM_CHECK(
      ids.dim() == 2 && ids.size(0) == 1 && n >= 1 && row >= 0 && row < B && slot >= 0 && slot + n <= cache.capacity,
      InvalidArgument, "prefill_row: needs ids [1, n] with n >= 1, a row in [0, ", B,
      ") and slots [slot, slot + n) inside capacity ", cache.capacity, "; got ids ", ids.sizes(), ", row ", row,
      ", slot ", slot);
  torch::NoGradGuard ng;
  const int64_t nb = refill_length(n, cache.capacity - slot);
  auto padded = ids.to(torch::kLong);
  if (nb > n) padded = torch::cat({padded, padded.narrow(1, n - 1, 1).expand({1, nb - n})}, 1);
  KVCache rc;  // the row's slots [slot, slot + nb) as an empty cache: K/V land in place, attention sees only them
  for (size_t i = 0; i < cache.k.size(); ++i) {
    rc.k.push_back(cache.k[i].narrow(0, row, 1).narrow(2, slot, nb));
    rc.v.push_back(cache.v[i].narrow(0, row, 1).narrow(2, slot, nb));
  }
  rc.capacity = nb;
  auto h = hidden(padded, &rc);
  return head(h.narrow(1, n - 1, 1)).select(1, 0);
}

std::vector<std::pair<std::string, LinearPtr*>> Model::linears() {
  std::vector<std::pair<std::string, LinearPtr*>> out;
  const auto& names = decoder_linear_names();
  for (size_t i = 0; i < layers.size(); ++i) {
    DecoderLayer& L = layers[i];
    LinearPtr* slots[] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
    for (size_t j = 0; j < 7; ++j)
      out.emplace_back("model.layers." + std::to_string(i) + "." + names[j] + ".weight", slots[j]);
  }
  return out;
}

int64_t Model::num_parameters() const {
  int64_t n = embed.numel() + final_norm.numel() + (lm_head.is_same(embed) ? 0 : lm_head.numel());
  for (const auto& L : layers) {
    n += L.input_norm.numel() + L.post_attn_norm.numel();
    for (const auto* t : {&L.pre_ffn_norm, &L.post_ffn_norm, &L.q_norm, &L.k_norm})
      if (t->defined()) n += t->numel();
    for (const auto* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
      n += (*l)->out_features() * (*l)->in_features() + ((*l)->bias.defined() ? (*l)->bias.numel() : 0);
  }
  return n;
}

}  // namespace patchllm
