// GGUF (llama.cpp) -> Hugging Face model directory: dequantised weights in bf16 (or fp32) as model.safetensors,
// config.json and generation_config.json from `<arch>.*` metadata, tokenizer.json and tokenizer_config.json from
// `tokenizer.ggml.*`. Architectures: llama, qwen2, gemma3 (see src/gguf/gguf_hf.h for the mapping rules).
#pragma once
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace patchllm {

class GgufFile;

struct GgufHfModel {
  nlohmann::json config, generation_config, tokenizer, tokenizer_config;
  std::map<std::string, torch::Tensor> tensors;  // HF names, HF (row-major) shapes, bf16 or fp32
};

// Tensors only (Q/K rows un-permuted for llama, Gemma norms shifted back), in HF layout.
std::map<std::string, torch::Tensor> gguf_hf_tensors(const GgufFile& f, bool fp32);
// tokenizer.json + tokenizer_config.json: model "llama" -> SentencePiece-style BPE with byte fallback, "gpt2" ->
// byte-level BPE with merges (pre-tokenizer from tokenizer.ggml.pre: qwen2, llama-bpe). InvalidArgument otherwise.
void gguf_hf_tokenizer(const GgufFile& f, nlohmann::json& tokenizer, nlohmann::json& tokenizer_config);
GgufHfModel gguf_to_hf(const std::string& gguf_path, bool fp32);

// Writes the directory (created; an existing non-empty out_dir needs force).
void gguf_convert_to_hf(const std::string& gguf_path, const std::string& out_dir, bool fp32, bool force = false);

}  // namespace patchllm
