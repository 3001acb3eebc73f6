#include "model/config.h"

#include "core/error.h"
#include "core/file.h"

namespace patchllm {
namespace {

template <typename T>
T get_or(const nlohmann::json& j, const char* key, T def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  return j[key].get<T>();
}

}  // namespace

std::vector<std::string> config_supported_architectures() {
  return {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
}

ModelConfig config_from_json(const nlohmann::json& j, const std::string& source) {
  PATCHLLM_CHECK(j.is_object(), FormatError, source, ": config is not a JSON object");
  ModelConfig c;
  c.raw = j;
  try {
    PATCHLLM_CHECK(j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty(),
                   FormatError, source, ": no 'architectures' entry");
    c.architecture = j["architectures"][0].get<std::string>();
    bool ok = false;
    for (const auto& a : config_supported_architectures()) ok |= a == c.architecture;
    PATCHLLM_CHECK(ok, InvalidArgument, source, ": unsupported architecture ", c.architecture,
                   " (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
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
      if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int64_t>());
      if (e.is_array())
        for (const auto& x : e) c.eos_token_ids.push_back(x.get<int64_t>());
    }
    // RoPE: transformers < 4.45 writes rope_scaling.type, later rope_scaling.rope_type, and transformers >= 5
    // writes rope_parameters {rope_type, rope_theta, ...} (top-level rope_theta then absent); "default" means none.
    const nlohmann::json* rp = nullptr;
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
      rp = &j["rope_parameters"];
      c.rope_theta = get_or<double>(*rp, "rope_theta", c.rope_theta);
    } else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
      rp = &j["rope_scaling"];
    }
    if (rp) {
      const auto& r = *rp;
      std::string t = get_or<std::string>(r, "rope_type", get_or<std::string>(r, "type", "default"));
      if (t == "llama3") {
        c.rope_scaling.type = "llama3";
        c.rope_scaling.factor = get_or<double>(r, "factor", 8.0);
        c.rope_scaling.low_freq_factor = get_or<double>(r, "low_freq_factor", 1.0);
        c.rope_scaling.high_freq_factor = get_or<double>(r, "high_freq_factor", 4.0);
        c.rope_scaling.original_max_position = get_or<int64_t>(r, "original_max_position_embeddings", 8192);
      } else if (t == "linear") {
        c.rope_scaling.type = "linear";
        c.rope_scaling.factor = get_or<double>(r, "factor", 1.0);
      } else if (t != "default") {
        throw InvalidArgument(str(source, ": unsupported rope_scaling type '", t, "' (supported: llama3, linear)"));
      }
    }
    std::string act = get_or<std::string>(j, "hidden_act", "silu");
    PATCHLLM_CHECK(act == "silu", InvalidArgument, source, ": unsupported hidden_act '", act, "' (only silu)");
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(str(source, ": malformed config (", e.what(), ")"));
  }
  return c;
}

ModelConfig config_load(const std::string& path_or_dir) {
  std::string path = dir_exists(path_or_dir) ? path_join(path_or_dir, "config.json") : path_or_dir;
  PATCHLLM_CHECK(file_exists(path), FormatError, path, ": missing config.json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(file_read(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw FormatError(str(path, ": malformed JSON (", e.what(), ")"));
  }
  return config_from_json(j, path);
}

}  // namespace patchllm
