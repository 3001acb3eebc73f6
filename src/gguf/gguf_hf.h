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

}  // namespace patchllm
