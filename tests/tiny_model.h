// Random-weight tiny checkpoints of the supported families, written as HF directories (config + safetensors).
#pragma once
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/file.h"
#include "io/safetensors.h"

namespace patchllm::test {

struct TinySpec {
  std::string arch = "LlamaForCausalLM";
  int64_t hidden = 64, inter = 96, layers = 2, heads = 4, kv_heads = 2, vocab = 97, max_pos = 128;
  bool tied = false, bias = false, llama3_rope = false;
  int64_t sliding_window = 0;
  uint64_t seed = 0;
};

// The default spec as Qwen2: tied embeddings and q/k/v biases.
inline TinySpec tiny_qwen2_spec(uint64_t seed) {
  TinySpec s;
  s.arch = "Qwen2ForCausalLM";
  s.tied = s.bias = true;
  s.seed = seed;
  return s;
}

inline std::string tiny_model_write(const std::string& dir, const TinySpec& s) {
  torch::manual_seed(s.seed);
  const int64_t hd = s.hidden / s.heads;
  std::map<std::string, torch::Tensor> t;
  auto rnd = [](std::vector<int64_t> shape, double scale) { return torch::randn(shape) * scale; };
  t["model.embed_tokens.weight"] = rnd({s.vocab, s.hidden}, 0.5);
  t["model.norm.weight"] = 1 + rnd({s.hidden}, 0.1);
  if (!s.tied) t["lm_head.weight"] = rnd({s.vocab, s.hidden}, 0.1);
  for (int64_t i = 0; i < s.layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    t[p + "input_layernorm.weight"] = 1 + rnd({s.hidden}, 0.1);
    t[p + "post_attention_layernorm.weight"] = 1 + rnd({s.hidden}, 0.1);
    t[p + "self_attn.q_proj.weight"] = rnd({s.heads * hd, s.hidden}, 0.15);
    t[p + "self_attn.k_proj.weight"] = rnd({s.kv_heads * hd, s.hidden}, 0.15);
    t[p + "self_attn.v_proj.weight"] = rnd({s.kv_heads * hd, s.hidden}, 0.15);
    t[p + "self_attn.o_proj.weight"] = rnd({s.hidden, s.heads * hd}, 0.15);
    t[p + "mlp.gate_proj.weight"] = rnd({s.inter, s.hidden}, 0.15);
    t[p + "mlp.up_proj.weight"] = rnd({s.inter, s.hidden}, 0.15);
    t[p + "mlp.down_proj.weight"] = rnd({s.hidden, s.inter}, 0.15);
    if (s.bias) {
      t[p + "self_attn.q_proj.bias"] = rnd({s.heads * hd}, 0.1);
      t[p + "self_attn.k_proj.bias"] = rnd({s.kv_heads * hd}, 0.1);
      t[p + "self_attn.v_proj.bias"] = rnd({s.kv_heads * hd}, 0.1);
    }
  }
  nlohmann::json c = {{"architectures", {s.arch}},
                      {"hidden_size", s.hidden},
                      {"intermediate_size", s.inter},
                      {"num_hidden_layers", s.layers},
                      {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads},
                      {"vocab_size", s.vocab},
                      {"max_position_embeddings", s.max_pos},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", s.tied},
                      {"bos_token_id", 1},
                      {"eos_token_id", 2}};
  if (s.llama3_rope)
    c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 32}};
  if (s.sliding_window > 0) c["sliding_window"] = s.sliding_window;
  dir_create(dir);
  safetensors_write(dir + "/model.safetensors", t);
  file_write_atomic(dir + "/config.json", c.dump(2));
  return dir;
}

}  // namespace patchllm::test
