// Tokenizers: HF tokenizer.json (BPE, byte-level as in LLaMA-3/Qwen2 and SentencePiece-style with byte fallback as in
// LLaMA-2/Mistral, with their normalizers, pre-tokenizers, decoders, added/special tokens, post-processor BOS/EOS),
// SentencePiece .model files, and llama2.c tokenizer.bin. One interface for all of them.
#pragma once
#include <nlohmann/json.hpp>
#include <memory>
#include <string>
#include <vector>

namespace patchllm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // add_special: add BOS/EOS exactly as HF `tokenizer(text)` does for this tokenizer (post-processor /
  // tokenizer_config add_bos_token). Special tokens written in the text are matched as HF does.
  virtual std::vector<int> encode(const std::string& text, bool add_special = true) const = 0;
  // skip_special: drop special/control tokens, as HF decode(skip_special_tokens=True).
  virtual std::string decode(const std::vector<int>& ids, bool skip_special = true) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;  // -1 if none
  virtual int eos_id() const = 0;  // -1 if none
  virtual std::string token_text(int id) const = 0;  // raw piece, for debugging and inspect
};
using TokenizerPtr = std::unique_ptr<Tokenizer>;

// A model directory: tokenizer.json if present (with tokenizer_config.json beside it), else tokenizer.model.
TokenizerPtr tokenizer_load(const std::string& model_dir);
// One file, by content/extension: tokenizer.json, SentencePiece .model, llama2.c tokenizer .bin.
TokenizerPtr tokenizer_load_file(const std::string& path);

// Streaming detokenizer: feed ids one at a time, get the newly completed UTF-8 text (never splits a code point).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : _tok(tok) {}
  std::string push(int id);
  std::string flush();

 private:
  const Tokenizer& _tok;
  std::vector<int> _ids;
  size_t _emitted = 0;
};

// llama2.c tokenizer.bin -> an HF tokenizer.json document (SentencePiece-style BPE with byte fallback, merges derived
// from piece scores) plus tokenizer_config.json; used by `patchllm convert --from llama2c`.
nlohmann::json tokenizer_json_from_llama2c(const std::string& bin_path);
nlohmann::json tokenizer_config_from_llama2c(const std::string& bin_path);

}  // namespace patchllm
