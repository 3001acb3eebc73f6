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
  std::string architecture;  // LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM
  std::string model_type;
  int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int64_t vocab_size = 0, max_position = 2048;
  double rms_eps = 1e-6, rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2: always; Llama: attention_bias flag)
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // 0 = full attention
  std::string torch_dtype = "float32";
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  nlohmann::json raw;  // the file as read, for export
};

ModelConfig config_from_json(const nlohmann::json& j, const std::string& source);
ModelConfig config_load(const std::string& path_or_dir);  // config.json path, or a directory holding it
std::vector<std::string> config_supported_architectures();

}  // namespace patchllm
