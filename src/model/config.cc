#include "model/config.h"

#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"

namespace patchllm {
namespace {

// A key of the wrong kind; config_from_json adds the file name.
struct BadValue : FormatError {
  using FormatError::FormatError;
};

template <typename T>
T get_or(const nlohmann::json& j, const char* key, T def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // nlohmann converts a float such as 1e30 to an integer with undefined behaviour; refuse anything not integral.
    int64_t v;
    if (!json_int_in(j[key], std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), &v))
      throw BadValue(str("'", key, "' must be an integer, not ", j[key].dump()));
    return static_cast<T>(v);
  } else {
    return j[key].get<T>();
  }
}

// One RoPE parameter set: transformers < 4.45 writes rope_scaling.type, later rope_scaling.rope_type, and
// transformers >= 5 rope_parameters {rope_type, rope_theta, ...}; "default" means no scaling.
void parse_rope(const nlohmann::json& r, const std::string& source, double& theta, RopeScaling& rs) {
  theta = get_or<double>(r, "rope_theta", theta);
  std::string t = get_or<std::string>(r, "rope_type", get_or<std::string>(r, "type", "default"));
  if (t == "llama3") {
    rs.type = "llama3";
    rs.factor = get_or<double>(r, "factor", 8.0);
    rs.low_freq_factor = get_or<double>(r, "low_freq_factor", 1.0);
    rs.high_freq_factor = get_or<double>(r, "high_freq_factor", 4.0);
    rs.original_max_position = get_or<int64_t>(r, "original_max_position_embeddings", 8192);
  } else if (t == "linear") {
    rs.type = "linear";
    rs.factor = get_or<double>(r, "factor", 1.0);
  } else if (t != "default") {
    throw InvalidArgument(str(source, ": unsupported rope_scaling type '", t, "' (supported: llama3, linear)"));
  }
}

// Gemma 3 specifics (transformers' Gemma3TextConfig defaults where a key is absent).
void parse_gemma3(const nlohmann::json& j, const std::string& source, ModelConfig& c) {
  c.hidden_act = get_or<std::string>(j, "hidden_activation", get_or<std::string>(j, "hidden_act", "gelu_pytorch_tanh"));
  PATCHLLM_CHECK(c.hidden_act == "gelu_pytorch_tanh" || c.hidden_act == "gelu", InvalidArgument, source,
                 ": unsupported hidden_activation '", c.hidden_act, "' (Gemma 3: gelu_pytorch_tanh or gelu)");
  c.sliding_window = get_or<int64_t>(j, "sliding_window", 4096);
  c.sliding_layers.clear();
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    PATCHLLM_CHECK(static_cast<int64_t>(j["layer_types"].size()) == c.num_layers, FormatError, source, ": layer_types has ",
                   j["layer_types"].size(), " entries for ", c.num_layers, " layers");
    for (const auto& t : j["layer_types"]) {
      std::string s = t.get<std::string>();
      PATCHLLM_CHECK(s == "sliding_attention" || s == "full_attention", InvalidArgument, source,
                     ": unsupported layer type '", s, "' (sliding_attention or full_attention)");
      c.sliding_layers.push_back(s == "sliding_attention");
    }
  } else {  // older configs: every sliding_window_pattern-th layer is global
    const int64_t pattern = get_or<int64_t>(j, "sliding_window_pattern", 6);
    PATCHLLM_CHECK(pattern > 0, FormatError, source, ": sliding_window_pattern must be positive, got ", pattern);
    for (int64_t i = 0; i < c.num_layers; ++i) c.sliding_layers.push_back((i + 1) % pattern != 0);
  }
  bool any_sliding = false;
  for (bool b : c.sliding_layers) any_sliding |= b;
  PATCHLLM_CHECK(!any_sliding || c.sliding_window > 0, FormatError, source,
                 ": sliding_attention layers need a positive sliding_window");
  // RoPE: global layers use rope_theta (+ rope_scaling), sliding layers rope_local_base_freq; transformers >= 5
  // writes both as rope_parameters {full_attention: {...}, sliding_attention: {...}}.
  c.rope_theta = get_or<double>(j, "rope_theta", 1000000.0);
  c.rope_local_theta = get_or<double>(j, "rope_local_base_freq", 10000.0);
  c.rope_scaling = RopeScaling{};
  c.rope_local_scaling = RopeScaling{};
  const auto* rp = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? &j["rope_parameters"] : nullptr;
  if (rp && (rp->contains("full_attention") || rp->contains("sliding_attention"))) {
    if (rp->contains("full_attention") && (*rp)["full_attention"].is_object())
      parse_rope((*rp)["full_attention"], source, c.rope_theta, c.rope_scaling);
    if (rp->contains("sliding_attention") && (*rp)["sliding_attention"].is_object())
      parse_rope((*rp)["sliding_attention"], source, c.rope_local_theta, c.rope_local_scaling);
  } else if (rp) {
    parse_rope(*rp, source, c.rope_theta, c.rope_scaling);
  } else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    parse_rope(j["rope_scaling"], source, c.rope_theta, c.rope_scaling);
  }
  c.query_pre_attn_scalar = get_or<double>(j, "query_pre_attn_scalar", 256.0);
  PATCHLLM_CHECK(c.query_pre_attn_scalar > 0, FormatError, source, ": query_pre_attn_scalar must be positive");
  c.attn_logit_softcapping = get_or<double>(j, "attn_logit_softcapping", 0.0);
  c.final_logit_softcapping = get_or<double>(j, "final_logit_softcapping", 0.0);
  c.tie_word_embeddings = get_or<bool>(j, "tie_word_embeddings", true);
  c.max_position = get_or<int64_t>(j, "max_position_embeddings", 131072);
  PATCHLLM_CHECK(!get_or<bool>(j, "use_bidirectional_attention", false), InvalidArgument, source,
                 ": use_bidirectional_attention is not supported");
}

}  // namespace

std::vector<std::string> config_supported_architectures() {
  return {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Gemma3ForCausalLM"};
}

ModelConfig config_from_json(const nlohmann::json& top, const std::string& source) {
  PATCHLLM_CHECK(top.is_object(), FormatError, source, ": config is not a JSON object");
  ModelConfig c;
  c.raw = top;
  try {
    PATCHLLM_CHECK(top.contains("architectures") && top["architectures"].is_array() && !top["architectures"].empty(),
                   FormatError, source, ": no 'architectures' entry");
    c.architecture = top["architectures"][0].get<std::string>();
    bool ok = false;
    for (const auto& a : config_supported_architectures()) ok |= a == c.architecture;
    PATCHLLM_CHECK(ok, InvalidArgument, source, ": unsupported architecture ", c.architecture,
                   " (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM)");
    // model_type gemma3 (the multimodal wrapper's config) keeps the text model's keys in text_config.
    nlohmann::json flat;
    const bool nested = c.architecture == "Gemma3ForCausalLM" && get_or<std::string>(top, "model_type", "") == "gemma3" &&
                        top.contains("text_config") && top["text_config"].is_object();
    if (nested) {
      flat = top["text_config"];
      for (const char* k : {"bos_token_id", "eos_token_id", "tie_word_embeddings", "torch_dtype", "dtype"})
        if (!flat.contains(k) && top.contains(k)) flat[k] = top[k];
    }
    const nlohmann::json& j = nested ? flat : top;
    c.model_type = get_or<std::string>(j, "model_type", "");
    for (const char* k : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"})
      PATCHLLM_CHECK(j.contains(k) && j[k].is_number_integer() && j[k].get<int64_t>() > 0, FormatError, source,
                     ": '", k, "' missing or not a positive integer");
    c.hidden_size = j["hidden_size"].get<int64_t>();
    c.intermediate_size = j["intermediate_size"].get<int64_t>();
    c.num_layers = j["num_hidden_layers"].get<int64_t>();
    c.num_heads = j["num_attention_heads"].get<int64_t>();
    c.num_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.num_heads);
    c.vocab_size = j["vocab_size"].get<int64_t>();
    c.head_dim = get_or<int64_t>(j, "head_dim", c.hidden_size / c.num_heads);
    c.max_position = get_or<int64_t>(j, "max_position_embeddings", 2048);
    c.rms_eps = get_or<double>(j, "rms_norm_eps", 1e-6);
    c.rope_theta = get_or<double>(j, "rope_theta", 10000.0);
    c.tie_word_embeddings = get_or<bool>(j, "tie_word_embeddings", false);
    c.torch_dtype = get_or<std::string>(j, "torch_dtype", get_or<std::string>(j, "dtype", "float32"));
    c.mlp_bias = get_or<bool>(j, "mlp_bias", false);
    c.attention_bias = c.architecture == "Qwen2ForCausalLM" ? true : get_or<bool>(j, "attention_bias", false);
    if (c.architecture == "MistralForCausalLM" || get_or<bool>(j, "use_sliding_window", false))
      c.sliding_window = get_or<int64_t>(j, "sliding_window", 0);
    if (c.architecture == "Qwen2ForCausalLM" && !get_or<bool>(j, "use_sliding_window", false)) c.sliding_window = 0;
    PATCHLLM_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0, FormatError, source,
                   ": num_attention_heads ", c.num_heads, " is not a multiple of num_key_value_heads ", c.num_kv_heads);
    PATCHLLM_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, FormatError, source, ": head_dim ", c.head_dim,
                   " must be positive and even for RoPE");
    if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"];
    if (j.contains("eos_token_id")) {
      const auto& e = j["eos_token_id"];
      const auto add = [&](const nlohmann::json& x) {
        int64_t id;
        if (!json_int_in(x, 0, INT64_MAX, &id)) throw BadValue(str("eos_token_id ", x.dump(), " is not a token id"));
        c.eos_token_ids.push_back(id);
      };
      if (e.is_number_integer()) add(e);
      if (e.is_array())
        for (const auto& x : e) add(x);
    }
    if (c.is_gemma3()) {
      parse_gemma3(j, source, c);
    } else {
      if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
        parse_rope(j["rope_parameters"], source, c.rope_theta, c.rope_scaling);  // top-level rope_theta then absent
      else if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
        parse_rope(j["rope_scaling"], source, c.rope_theta, c.rope_scaling);
      c.hidden_act = get_or<std::string>(j, "hidden_act", "silu");
      PATCHLLM_CHECK(c.hidden_act == "silu", InvalidArgument, source, ": unsupported hidden_act '", c.hidden_act,
                     "' (only silu)");
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(str(source, ": malformed config (", e.what(), ")"));
  } catch (const BadValue& e) {
    throw FormatError(str(source, ": ", e.what()));
  }
  return c;
}

ModelConfig config_load(const std::string& path_or_dir) {
  std::string path = dir_exists(path_or_dir) ? path_join(path_or_dir, "config.json") : path_or_dir;
  PATCHLLM_CHECK(file_exists(path), FormatError, path, ": missing config.json");
  return config_from_json(json_read_file(path), path);
}

}  // namespace patchllm
