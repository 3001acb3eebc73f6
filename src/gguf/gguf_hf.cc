#include "gguf/gguf_hf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/log.h"

namespace patchllm {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Per-layer GGUF stem -> HF module path, for each architecture (llama.cpp gguf-py/gguf/tensor_mapping.py, reversed).
const std::map<std::string, std::string>& layer_map(const std::string& arch) {
  static const std::map<std::string, std::string> llama = {
      {"attn_norm", "input_layernorm"},     {"ffn_norm", "post_attention_layernorm"},
      {"attn_q", "self_attn.q_proj"},       {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},       {"attn_output", "self_attn.o_proj"},
      {"ffn_gate", "mlp.gate_proj"},        {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  // Gemma 3 has four norms per layer: ffn_norm is the *pre*-feed-forward norm there.
  static const std::map<std::string, std::string> gemma3 = {
      {"attn_norm", "input_layernorm"},
      {"post_attention_norm", "post_attention_layernorm"},
      {"ffn_norm", "pre_feedforward_layernorm"},
      {"post_ffw_norm", "post_feedforward_layernorm"},
      {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"},
      {"attn_q_norm", "self_attn.q_norm"},
      {"attn_k_norm", "self_attn.k_norm"},
      {"ffn_gate", "mlp.gate_proj"},
      {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  return arch == "gemma3" ? gemma3 : llama;
}

std::string arch_of(const GgufFile& f) { return f.get_string("general.architecture"); }

// "<prefix><layer>.<module>.<kind>" with a decimal layer and kind weight|bias (both naming schemes share it).
bool split_layer_tensor(const std::string& name, const std::string& prefix, int64_t& layer, std::string& module,
                        std::string& kind) {
  if (!starts_with(name, prefix)) return false;
  size_t dot = name.find('.', prefix.size());
  size_t last = name.rfind('.');
  if (dot == std::string::npos || last <= dot) return false;
  std::string l = name.substr(prefix.size(), dot - prefix.size());
  module = name.substr(dot + 1, last - dot - 1);
  kind = name.substr(last + 1);
  if (l.empty() || l.find_first_not_of("0123456789") != std::string::npos || (kind != "weight" && kind != "bias"))
    return false;
  layer = std::stoll(l);
  return true;
}

// Moves rows of every head between HF's rotate_half layout and ggml's interleaved pairs: within a head, GGUF row
// 2*i + j is HF row j*hd/2 + i. to_gguf picks the direction. Any element size.
void permute_head_rows(void* data, size_t elem_size, int64_t rows, int64_t cols, int64_t n_head, bool to_gguf,
                       const char* who) {
  PATCHLLM_CHECK(n_head > 0 && rows % (2 * n_head) == 0, InvalidArgument, who, ": ", rows,
                 " rows do not split into ", n_head, " heads of even size");
  const int64_t hd = rows / n_head, half = hd / 2;
  const size_t row_bytes = static_cast<size_t>(cols) * elem_size;
  std::vector<uint8_t> head(static_cast<size_t>(hd) * row_bytes);
  auto* bytes = static_cast<uint8_t*>(data);
  for (int64_t h = 0; h < n_head; ++h) {
    uint8_t* base = bytes + static_cast<size_t>(h * hd) * row_bytes;
    std::memcpy(head.data(), base, head.size());
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t gguf_row = 2 * i + j, hf_row = j * half + i;
        const int64_t dst = to_gguf ? gguf_row : hf_row, src = to_gguf ? hf_row : gguf_row;
        std::memcpy(base + static_cast<size_t>(dst) * row_bytes, head.data() + static_cast<size_t>(src) * row_bytes,
                    row_bytes);
      }
  }
}

}  // namespace

std::vector<std::string> gguf_hf_supported_architectures() { return {"llama", "qwen2", "gemma3"}; }

void gguf_hf_check_architecture(const GgufFile& f) {
  std::string arch = arch_of(f);
  for (const auto& a : gguf_hf_supported_architectures())
    if (a == arch) return;
  throw InvalidArgument(str(f.path(), ": unsupported GGUF architecture '", arch, "' (supported: llama, qwen2, gemma3)"));
}

std::string gguf_hf_tensor_name(const std::string& arch, const std::string& name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  if (name == "rope_freqs.weight") return "";  // llama3 RoPE factors: folded into config.json rope_scaling
  int64_t layer;
  std::string stem, kind;
  if (split_layer_tensor(name, "blk.", layer, stem, kind)) {
    const auto& m = layer_map(arch);
    auto it = m.find(stem);
    if (it != m.end()) return str("model.layers.", layer, ".", it->second, ".", kind);
  }
  throw InvalidArgument(str("GGUF tensor '", name, "' has no Hugging Face name for architecture '", arch, "'"));
}

void gguf_hf_unpermute_rows(float* data, int64_t rows, int64_t cols, int64_t n_head) {
  permute_head_rows(data, sizeof(float), rows, cols, n_head, /*to_gguf=*/false, "gguf_hf_unpermute_rows");
}

int64_t gguf_hf_permute_heads(const GgufFile& f, const std::string& name) {
  if (arch_of(f) != "llama" || !starts_with(name, "blk.")) return 0;
  const bool q = ends_with(name, ".attn_q.weight") || ends_with(name, ".attn_q.bias");
  const bool k = ends_with(name, ".attn_k.weight") || ends_with(name, ".attn_k.bias");
  if (!q && !k) return 0;
  const int64_t nh = f.get_int("llama.attention.head_count");
  // convert_hf_to_gguf.py permutes K with the KV head count (its permute() swaps n_head for n_head_kv).
  return q ? nh : f.get_int("llama.attention.head_count_kv", nh);
}

float gguf_hf_norm_shift(const std::string& arch, const std::string& name) {
  return arch == "gemma3" && ends_with(name, "norm.weight") ? -1.0f : 0.0f;
}

double gguf_hf_short_float(double v) {
  const float target = static_cast<float>(v);
  if (!std::isfinite(target)) return v;
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, static_cast<double>(target));
    if (std::strtof(buf, nullptr) == target) return std::strtod(buf, nullptr);
  }
  return static_cast<double>(target);
}

namespace {

// llama.cpp stores LLaMA-3.1-style RoPE scaling as a rope_freqs tensor of per-dimension divisors, not as the four
// parameters HF needs. Infer them (factor = largest divisor; low/high frequency factors and the original context as
// in every LLaMA 3.x release) and check that they regenerate the stored divisors.
nlohmann::json llama3_rope_scaling(const GgufFile& f, int64_t head_dim, double theta) {
  const GgufTensor& t = f.tensor("rope_freqs.weight");
  std::vector<float> div = f.dequantize(t);
  PATCHLLM_CHECK(static_cast<int64_t>(div.size()) == head_dim / 2, FormatError, f.path(), ": rope_freqs.weight has ",
                 div.size(), " values, expected head_dim/2 = ", head_dim / 2);
  double factor = 1.0;
  for (float d : div) factor = std::max(factor, static_cast<double>(d));
  const double low = 1.0, high = 4.0, orig = 8192.0;
  const double low_wavelen = orig / low, high_wavelen = orig / high;
  double max_err = 0;
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(theta, (2.0 * i) / head_dim);
    const double wavelen = 2 * M_PI / freq;
    double want;
    if (wavelen < high_wavelen) {
      want = 1.0;
    } else if (wavelen > low_wavelen) {
      want = factor;
    } else {
      const double smooth = (orig / wavelen - low) / (high - low);
      want = 1.0 / ((1 - smooth) / factor + smooth);
    }
    max_err = std::max(max_err, std::fabs(want - div[i]) / want);
  }
  if (max_err > 1e-3)
    log_warn(f.path(), ": rope_freqs.weight does not match LLaMA-3 scaling with factor ", factor,
             " (max relative error ", max_err, "); config.json rope_scaling is approximate");
  return {{"rope_type", "llama3"},
          {"factor", gguf_hf_short_float(factor)},
          {"low_freq_factor", low},
          {"high_freq_factor", high},
          {"original_max_position_embeddings", static_cast<int64_t>(orig)}};
}

nlohmann::json rope_scaling(const GgufFile& f, const std::string& P, int64_t head_dim, double theta) {
  if (f.find_tensor("rope_freqs.weight")) return llama3_rope_scaling(f, head_dim, theta);
  std::string type = f.get_string(P + "rope.scaling.type", "none");
  if (type == "none" || type.empty()) return nullptr;
  nlohmann::json r = {{"rope_type", type}, {"factor", gguf_hf_short_float(f.get_float(P + "rope.scaling.factor"))}};
  if (type == "linear") r["type"] = "linear";  // transformers < 4.45 reads "type"
  if (f.has(P + "rope.scaling.original_context_length"))
    r["original_max_position_embeddings"] = f.get_int(P + "rope.scaling.original_context_length");
  return r;
}

}  // namespace

nlohmann::json gguf_hf_config(const GgufFile& f, bool fp32) {
  gguf_hf_check_architecture(f);
  const std::string arch = arch_of(f), P = arch + ".";
  const int64_t hidden = f.get_int(P + "embedding_length");
  const int64_t n_head = f.get_int(P + "attention.head_count");
  const int64_t n_kv = f.get_int(P + "attention.head_count_kv", n_head);
  const int64_t n_layer = f.get_int(P + "block_count");
  PATCHLLM_CHECK(hidden > 0 && n_head > 0 && n_kv > 0 && n_layer > 0 && n_head % n_kv == 0, FormatError, f.path(),
                 ": implausible hyper-parameters (embedding_length ", hidden, ", heads ", n_head, "/", n_kv,
                 ", blocks ", n_layer, ")");
  const int64_t head_dim = f.get_int(P + "attention.key_length", hidden / n_head);
  const double theta = gguf_hf_short_float(f.get_float(P + "rope.freq_base", 10000.0));
  const GgufTensor& emb = f.tensor("token_embd.weight");
  PATCHLLM_CHECK(emb.ne.size() == 2 && emb.ne[0] == hidden, FormatError, f.path(),
                 ": token_embd.weight is not [vocab, ", hidden, "]");
  const int64_t vocab = emb.ne[1];
  const bool tied = f.find_tensor("output.weight") == nullptr;

  nlohmann::json c;
  c["hidden_size"] = hidden;
  c["intermediate_size"] = f.get_int(P + "feed_forward_length");
  c["num_hidden_layers"] = n_layer;
  c["num_attention_heads"] = n_head;
  c["num_key_value_heads"] = n_kv;
  c["head_dim"] = head_dim;
  c["rms_norm_eps"] = gguf_hf_short_float(f.get_float(P + "attention.layer_norm_rms_epsilon"));
  c["rope_theta"] = theta;
  c["max_position_embeddings"] = f.get_int(P + "context_length", 2048);
  c["vocab_size"] = vocab;
  c["tie_word_embeddings"] = tied;
  c["torch_dtype"] = fp32 ? "float32" : "bfloat16";
  c["rope_scaling"] = rope_scaling(f, P, head_dim, theta);
  if (f.has("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = f.get_int("tokenizer.ggml.bos_token_id");
  if (f.has("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = f.get_int("tokenizer.ggml.eos_token_id");
  if (f.has("tokenizer.ggml.padding_token_id")) c["pad_token_id"] = f.get_int("tokenizer.ggml.padding_token_id");

  if (arch == "llama") {
    c["architectures"] = {"LlamaForCausalLM"};
    c["model_type"] = "llama";
    c["hidden_act"] = "silu";
    c["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    c["mlp_bias"] = false;
  } else if (arch == "qwen2") {
    c["architectures"] = {"Qwen2ForCausalLM"};
    c["model_type"] = "qwen2";
    c["hidden_act"] = "silu";
    c["use_sliding_window"] = false;
    c["sliding_window"] = c["max_position_embeddings"];
    c["max_window_layers"] = n_layer;
  } else {  // gemma3 (text): llama.cpp's llm_build_gemma3 semantics
    c["architectures"] = {"Gemma3ForCausalLM"};
    c["model_type"] = "gemma3_text";
    c["hidden_activation"] = "gelu_pytorch_tanh";
    c["sliding_window"] = f.get_int(P + "attention.sliding_window", 4096);
    // llama.cpp: every 6th layer is global (swa pattern 6), the others use the sliding window.
    const int64_t pattern = 6;
    c["sliding_window_pattern"] = pattern;
    nlohmann::json types = nlohmann::json::array();
    for (int64_t i = 0; i < n_layer; ++i) types.push_back((i + 1) % pattern ? "sliding_attention" : "full_attention");
    c["layer_types"] = types;
    c["rope_local_base_freq"] = gguf_hf_short_float(f.get_float(P + "rope.freq_base_swa", 10000.0));
    // llama.cpp scales queries by 1/sqrt(head_dim), except for the 62-layer 27B model (1/sqrt(hidden / heads)).
    c["query_pre_attn_scalar"] = n_layer == 62 ? hidden / n_head : head_dim;
    c["attn_logit_softcapping"] = nullptr;
    c["final_logit_softcapping"] = nullptr;
    c["attention_bias"] = false;
  }
  return c;
}

nlohmann::json gguf_hf_generation_config(const GgufFile& f) {
  nlohmann::json g;
  if (f.has("tokenizer.ggml.bos_token_id")) g["bos_token_id"] = f.get_int("tokenizer.ggml.bos_token_id");
  if (f.has("tokenizer.ggml.eos_token_id")) {
    int64_t eos = f.get_int("tokenizer.ggml.eos_token_id");
    int64_t eot = f.get_int("tokenizer.ggml.eot_token_id", eos);
    g["eos_token_id"] = eot != eos ? nlohmann::json{eos, eot} : nlohmann::json(eos);
  }
  if (f.has("tokenizer.ggml.padding_token_id")) g["pad_token_id"] = f.get_int("tokenizer.ggml.padding_token_id");
  return g;
}


// ---- Hugging Face -> GGUF ----

namespace {

int64_t cfg_int(const nlohmann::json& c, const char* key, const std::string& origin) {
  auto it = c.find(key);
  PATCHLLM_CHECK(it != c.end() && it->is_number_integer() && it->get<int64_t>() > 0, InvalidArgument, origin,
                 ": '", key, "' is missing or not a positive integer");
  return it->get<int64_t>();
}
int64_t cfg_int(const nlohmann::json& c, const char* key, int64_t dflt) {
  auto it = c.find(key);
  return it != c.end() && it->is_number_integer() ? it->get<int64_t>() : dflt;
}
double cfg_float(const nlohmann::json& c, const char* key, double dflt) {
  auto it = c.find(key);
  return it != c.end() && it->is_number() ? it->get<double>() : dflt;
}
int64_t cfg_head_dim(const nlohmann::json& c) {
  const int64_t hd = cfg_int(c, "head_dim", int64_t{0});
  return hd > 0 ? hd : cfg_int(c, "hidden_size", int64_t{0}) / std::max<int64_t>(1, cfg_int(c, "num_attention_heads", int64_t{1}));
}
const nlohmann::json* rope_scaling_of(const nlohmann::json& c) {
  auto it = c.find("rope_scaling");
  return it != c.end() && it->is_object() ? &*it : nullptr;
}
std::string rope_type_of(const nlohmann::json& rs) {
  std::string t = rs.value("rope_type", std::string());
  if (t.empty()) t = rs.value("type", std::string());  // transformers < 4.45
  return t;
}

}  // namespace

std::string hf_gguf_architecture(const nlohmann::json& config, const std::string& origin) {
  std::string a;
  auto it = config.find("architectures");
  if (it != config.end() && it->is_array() && !it->empty() && (*it)[0].is_string()) a = (*it)[0].get<std::string>();
  if (a == "LlamaForCausalLM" || a == "MistralForCausalLM") return "llama";
  if (a == "Qwen2ForCausalLM") return "qwen2";
  if (a == "Gemma3ForCausalLM") return "gemma3";
  throw InvalidArgument(str(origin, ": unsupported architecture '", a,
                            "' for GGUF export (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                            "Gemma3ForCausalLM)"));
}

std::string hf_gguf_tensor_name(const std::string& arch, const std::string& name) {
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  if (ends_with(name, "rotary_emb.inv_freq")) return "";  // recomputed by llama.cpp from rope.freq_base
  int64_t layer;
  std::string module, kind;
  if (split_layer_tensor(name, "model.layers.", layer, module, kind))
    for (const auto& [stem, hf] : layer_map(arch))
      if (hf == module) return str("blk.", layer, ".", stem, ".", kind);
  throw InvalidArgument(str("tensor '", name, "' has no GGUF name for architecture '", arch, "'"));
}

void hf_gguf_permute_rows(void* data, size_t elem_size, int64_t rows, int64_t cols, int64_t n_head) {
  permute_head_rows(data, elem_size, rows, cols, n_head, /*to_gguf=*/true, "hf_gguf_permute_rows");
}

int64_t hf_gguf_permute_heads(const std::string& arch, const nlohmann::json& config, const std::string& name) {
  if (arch != "llama" || !starts_with(name, "model.layers.")) return 0;
  const bool q = ends_with(name, ".q_proj.weight") || ends_with(name, ".q_proj.bias");
  const bool k = ends_with(name, ".k_proj.weight") || ends_with(name, ".k_proj.bias");
  if (!q && !k) return 0;
  const int64_t nh = cfg_int(config, "num_attention_heads", int64_t{0});
  return q ? nh : cfg_int(config, "num_key_value_heads", nh);
}

float hf_gguf_norm_shift(const std::string& arch, const std::string& name) {
  return arch == "gemma3" && ends_with(name, "norm.weight") ? 1.0f : 0.0f;
}

std::vector<std::pair<std::string, GgufValue>> hf_gguf_metadata(const nlohmann::json& c, const std::string& arch,
                                                                 const std::string& model_name, uint32_t file_type,
                                                                 const std::string& origin) {
  const std::string P = arch + ".";
  const bool gemma = arch == "gemma3";
  const int64_t hidden = cfg_int(c, "hidden_size", origin);
  const int64_t n_head = cfg_int(c, "num_attention_heads", origin);
  const int64_t n_kv = cfg_int(c, "num_key_value_heads", n_head);
  const int64_t n_layer = cfg_int(c, "num_hidden_layers", origin);
  const int64_t head_dim = cfg_head_dim(c);
  PATCHLLM_CHECK(n_kv > 0 && n_head % n_kv == 0 && head_dim > 0 && head_dim % 2 == 0, InvalidArgument, origin,
                 ": implausible attention shape (heads ", n_head, "/", n_kv, ", head_dim ", head_dim, ")");
  auto u32 = [](int64_t v) { return GgufValue::make_int(GgufType::UINT32, v); };
  auto f32 = [](double v) { return GgufValue::make_float(GgufType::FLOAT32, v); };
  std::vector<std::pair<std::string, GgufValue>> kv;
  kv.emplace_back("general.architecture", GgufValue::make_string(arch));
  kv.emplace_back("general.type", GgufValue::make_string("model"));
  if (!model_name.empty()) kv.emplace_back("general.name", GgufValue::make_string(model_name));
  kv.emplace_back(P + "block_count", u32(n_layer));
  kv.emplace_back(P + "context_length", u32(cfg_int(c, "max_position_embeddings", origin)));
  kv.emplace_back(P + "embedding_length", u32(hidden));
  kv.emplace_back(P + "feed_forward_length", u32(cfg_int(c, "intermediate_size", origin)));
  kv.emplace_back(P + "attention.head_count", u32(n_head));
  kv.emplace_back(P + "attention.head_count_kv", u32(n_kv));
  kv.emplace_back(P + "rope.freq_base", f32(cfg_float(c, "rope_theta", gemma ? 1000000.0 : 10000.0)));
  kv.emplace_back(P + "attention.layer_norm_rms_epsilon", f32(cfg_float(c, "rms_norm_eps", gemma ? 1e-6 : 1e-5)));
  // llama.cpp derives head_dim as hidden / heads unless these are present (Gemma 3 always has its own head_dim).
  if (gemma || head_dim != hidden / n_head) {
    kv.emplace_back(P + "attention.key_length", u32(head_dim));
    kv.emplace_back(P + "attention.value_length", u32(head_dim));
  }
  kv.emplace_back("general.file_type", u32(file_type));
  if (arch == "llama") {
    kv.emplace_back(P + "vocab_size", u32(cfg_int(c, "vocab_size", origin)));
    kv.emplace_back(P + "rope.dimension_count", u32(head_dim));
  }
  if (gemma && c.contains("rope_local_base_freq"))
    kv.emplace_back(P + "rope.freq_base_swa", f32(cfg_float(c, "rope_local_base_freq", 10000.0)));
  // Mistral's and Gemma 3's local attention window (Qwen2 declares one but does not use it: use_sliding_window).
  const int64_t swa = cfg_int(c, "sliding_window", int64_t{0});
  if (swa > 0 && (gemma || arch == "llama")) kv.emplace_back(P + "attention.sliding_window", u32(swa));
  if (const nlohmann::json* rs = rope_scaling_of(c)) {
    const std::string t = rope_type_of(*rs);
    const double factor = cfg_float(*rs, "factor", 1.0);
    if (t == "llama3" && arch == "llama") {
      // stored as the rope_freqs.weight tensor (hf_gguf_llama3_rope_freqs)
    } else if (t == "linear" || t == "yarn") {
      kv.emplace_back(P + "rope.scaling.type", GgufValue::make_string(t));
      kv.emplace_back(P + "rope.scaling.factor", f32(factor));
      if (t == "yarn")
        kv.emplace_back(P + "rope.scaling.original_context_length",
                        u32(cfg_int(*rs, "original_max_position_embeddings", origin)));
    } else if (!(t == "default" || t.empty())) {
      throw InvalidArgument(str(origin, ": rope_scaling type '", t, "' cannot be represented in GGUF for ", arch,
                                " (supported: linear, yarn", arch == "llama" ? ", llama3" : "", ")"));
    }
  }
  kv.emplace_back("general.quantization_version", u32(2));
  return kv;
}

std::vector<float> hf_gguf_llama3_rope_freqs(const nlohmann::json& c) {
  const nlohmann::json* rs = rope_scaling_of(c);
  if (!rs || rope_type_of(*rs) != "llama3") return {};
  const float base = static_cast<float>(cfg_float(c, "rope_theta", 10000.0));
  const int64_t dim = cfg_head_dim(c);
  const float factor = static_cast<float>(cfg_float(*rs, "factor", 8.0));
  const float low = static_cast<float>(cfg_float(*rs, "low_freq_factor", 1.0));
  const float high = static_cast<float>(cfg_float(*rs, "high_freq_factor", 4.0));
  // The original context as transformers reads it (rope_scaling), then convert_hf_to_gguf.py's top-level fallback.
  const float orig = static_cast<float>(
      cfg_float(*rs, "original_max_position_embeddings", cfg_float(c, "original_max_position_embeddings", 8192.0)));
  const float low_wavelen = orig / low, high_wavelen = orig / high;
  std::vector<float> out;
  for (int64_t i = 0; i < dim; i += 2) {
    // float32 throughout, as the reference computes it on float32 torch tensors
    const float freq = 1.0f / std::pow(base, static_cast<float>(i) / static_cast<float>(dim));
    const float wavelen = static_cast<float>(2 * M_PI) / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(factor);
    } else {
      const float smooth = (orig / wavelen - low) / (high - low);
      out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return out;
}

}  // namespace patchllm
