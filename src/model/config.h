// config.json of a Hugging Face LLaMA-family model, validated. Unsupported architectures are an InvalidArgument.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace patchllm {

struct RopeScaling {
  std::string type = "none";  // none | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int64_t original_max_position = 8192;                 // llama3
};

struct ModelConfig {
  std::string architecture;  // LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM | Gemma3ForCausalLM
  std::string model_type;
  int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int64_t vocab_size = 0, max_position = 2048;
  double rms_eps = 1e-6, rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2: always; Llama: attention_bias flag)
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // 0 = full attention
  // Per-layer attention kind (Gemma 3): true = sliding window, false = global. Empty: every layer uses
  // sliding_window (Mistral), so a layer slides iff sliding_window > 0; see layer_is_sliding().
  std::vector<bool> sliding_layers;
  std::string hidden_act = "silu";  // silu (SwiGLU) | gelu_pytorch_tanh, gelu (GeGLU, Gemma)
  // Gemma 3: sliding layers use their own RoPE base (rope_local_base_freq) without scaling.
  double rope_local_theta = 0;  // 0 = same as rope_theta
  RopeScaling rope_local_scaling;
  double query_pre_attn_scalar = 0;  // attention scale = query_pre_attn_scalar^-0.5; 0 = head_dim
  double attn_logit_softcapping = 0, final_logit_softcapping = 0;  // 0 = none
  std::string torch_dtype = "float32";
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  nlohmann::json raw;  // the file as read, for export

  // Gemma 3 block: scaled embedding, (1 + w) norms, QK-norm, pre/post norms around attention and MLP.
  bool is_gemma3() const { return architecture == "Gemma3ForCausalLM"; }
  bool layer_is_sliding(int64_t i) const {
    return sliding_window > 0 && (sliding_layers.empty() || sliding_layers.at(static_cast<size_t>(i)));
  }
};

ModelConfig config_from_json(const nlohmann::json& j, const std::string& source);
ModelConfig config_load(const std::string& path_or_dir);  // config.json path, or a directory holding it
std::vector<std::string> config_supported_architectures();

}  // namespace patchllm
