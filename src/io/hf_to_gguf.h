// Hugging Face model directory -> GGUF file for llama.cpp (`patchllm convert --to gguf`): the inverse of
// src/io/gguf_convert.h, following llama.cpp's convert_hf_to_gguf.py. Tensors in F16/BF16/F32 (1-D tensors and norms
// always F32, as llama.cpp expects), Q/K rows permuted for llama, Gemma 3 norms stored as w + 1, `<arch>.*`
// hyper-parameters, llama3 rope_freqs, and the tokenizer from tokenizer.json (+ tokenizer_config.json).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"

namespace patchllm {

enum class GgufExportDtype { F32, F16, BF16 };
GgufExportDtype gguf_export_dtype_parse(const std::string& s);  // "f32" | "f16" | "bf16"; InvalidArgument otherwise

// tokenizer.ggml.* KVs from a tokenizer.json document: a SentencePiece-style BPE with byte fallback -> model "llama"
// (scores from merge ranks, token types, add_space_prefix); byte-level BPE with the Qwen2 or LLaMA-3 pre-tokenizer ->
// model "gpt2" with merges and tokenizer.ggml.pre. Special ids from tokenizer_config.json (then config.json), as
// gguf-py's SpecialVocab reads them. n_vocab: rows of the embedding (ids without a token become "[PAD<id>]",
// unused). InvalidArgument naming `origin` for a tokenizer GGUF cannot represent.
std::vector<std::pair<std::string, GgufValue>> hf_gguf_tokenizer(const nlohmann::json& tokenizer,
                                                                  const nlohmann::json& tokenizer_config,
                                                                  const nlohmann::json& config,
                                                                  const std::string& arch, int64_t n_vocab,
                                                                  const std::string& origin);

// Converts hf_dir (config.json, model.safetensors[.index.json], tokenizer.json) into out_path, atomically. An
// existing out_path needs force.
void hf_convert_to_gguf(const std::string& hf_dir, const std::string& out_path, GgufExportDtype dtype,
                        bool force = false);

}  // namespace patchllm
