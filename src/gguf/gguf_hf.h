// GGUF -> Hugging Face mapping, torch-free: tensor names, llama.cpp's Q/K row permutation (reversed), the Gemma
// norm shift, and config.json / generation_config.json from `<arch>.*` metadata. src/io/gguf_convert.cc uses these
// to write the model directory; they live here so that the torch-free gguf tests cover them.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace patchllm {

// Architectures `general.architecture` may name: llama, qwen2, gemma3. Others are an InvalidArgument.
std::vector<std::string> gguf_hf_supported_architectures();
void gguf_hf_check_architecture(const GgufFile& f);  // InvalidArgument naming the file and the architecture

// HF parameter name for a GGUF tensor name ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight");
// "" for tensors HF does not store (rope_freqs.weight). InvalidArgument for names this mapping does not know.
std::string gguf_hf_tensor_name(const std::string& arch, const std::string& gguf_name);

// llama.cpp's convert_hf_to_gguf.py permutes the rows of q_proj/k_proj (weights and biases) of LLaMA-architecture
// models from HF's rotate_half RoPE layout to ggml's interleaved pairs: within each head, GGUF row 2*i + j holds HF
// row j*hd/2 + i. These undo it in place on a row-major [rows, cols] buffer (cols = 1 for a bias).
void gguf_hf_unpermute_rows(float* data, int64_t rows, int64_t cols, int64_t n_head);
// n_head to unpermute `gguf_name` with for this file: head_count for attn_q, head_count_kv for attn_k, 0 when the
// tensor is not permuted (other tensors, and architectures other than llama: qwen2 and gemma3 are stored unpermuted).
int64_t gguf_hf_permute_heads(const GgufFile& f, const std::string& gguf_name);

// Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores w + 1. Returns the value to add back (-1) for this tensor,
// or 0 when none applies.
float gguf_hf_norm_shift(const std::string& arch, const std::string& gguf_name);

// config.json for the file's architecture (LlamaForCausalLM / Qwen2ForCausalLM / Gemma3ForCausalLM), with
// torch_dtype "bfloat16" or "float32". Float hyper-parameters stored as f32 are written as the shortest decimal
// that rounds to the same f32 (1e-06, not 9.999999974752427e-07).
nlohmann::json gguf_hf_config(const GgufFile& f, bool fp32);
nlohmann::json gguf_hf_generation_config(const GgufFile& f);

// Shortest decimal rendering of a float32 value, as a double (so JSON prints it short).
double gguf_hf_short_float(double v);


// ---- Hugging Face -> GGUF: the inverse mapping, following llama.cpp's convert_hf_to_gguf.py ----

// GGUF architecture for config.json's architectures[0]: LlamaForCausalLM and MistralForCausalLM -> llama,
// Qwen2ForCausalLM -> qwen2, Gemma3ForCausalLM -> gemma3. InvalidArgument naming `origin` otherwise.
std::string hf_gguf_architecture(const nlohmann::json& config, const std::string& origin);

// GGUF tensor name for an HF parameter name ("model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight");
// "" for buffers GGUF does not store (rotary_emb.inv_freq). InvalidArgument for names the mapping does not know.
std::string hf_gguf_tensor_name(const std::string& arch, const std::string& hf_name);

// convert_hf_to_gguf.py's LlamaModel.permute, the inverse of gguf_hf_unpermute_rows: within each head, HF row
// j*hd/2 + i moves to GGUF row 2*i + j. In place on a row-major [rows, cols] buffer of elem_size-byte elements
// (a pure row move, so it is exact in any dtype).
void hf_gguf_permute_rows(void* data, size_t elem_size, int64_t rows, int64_t cols, int64_t n_head);
// n_head to permute `hf_name` with: num_attention_heads for q_proj, num_key_value_heads for k_proj (weight and
// bias) of llama; 0 for every other tensor and architecture.
int64_t hf_gguf_permute_heads(const std::string& arch, const nlohmann::json& config, const std::string& hf_name);
// +1 for Gemma 3 norm weights (llama.cpp stores w + 1), else 0.
float hf_gguf_norm_shift(const std::string& arch, const std::string& hf_name);

// general.* (architecture, type, name, file_type, alignment) and `<arch>.*` hyper-parameters, in the order
// convert_hf_to_gguf.py writes them. file_type: 0 all F32, 1 mostly F16, 32 mostly BF16. Missing or implausible
// fields are an InvalidArgument naming `origin`.
std::vector<std::pair<std::string, GgufValue>> hf_gguf_metadata(const nlohmann::json& config, const std::string& arch,
                                                                 const std::string& model_name, uint32_t file_type,
                                                                 const std::string& origin);

// rope_freqs.weight (head_dim/2 per-dimension divisors) for rope_scaling.rope_type "llama3", computed in float32 as
// convert_hf_to_gguf.py does; empty for other configs.
std::vector<float> hf_gguf_llama3_rope_freqs(const nlohmann::json& config);

}  // namespace patchllm
