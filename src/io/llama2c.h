// llama2.c checkpoints (legacy version-less float32 export) -> Hugging Face directory.
#pragma once
#include <string>

namespace patchllm {

struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
  bool shared_classifier;  // vocab_size > 0 in the file: the classifier is the token embedding
};

Llama2cHeader llama2c_read_header(const std::string& path);
// Writes config.json, model.safetensors (F32), tokenizer.json, tokenizer_config.json, generation_config.json into
// out_dir (created; an existing non-empty out_dir needs force). Q/K rows are permuted from llama2.c's interleaved
// RoPE pairs to HF's rotate_half layout, as transformers' own converter does.
void llama2c_convert_to_hf(const std::string& model_bin, const std::string& tokenizer_bin, const std::string& out_dir,
                           bool force);

}  // namespace patchllm
