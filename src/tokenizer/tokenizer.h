// Tokenizers: HF tokenizer.json (BPE, byte-level as in LLaMA-3/Qwen2 and SentencePiece-style with byte fallback as in
// LLaMA-2/Mistral, with their normalizers, pre-tokenizers, decoders, added/special tokens, post-processor BOS/EOS),
// SentencePiece .model files, and llama2.c tokenizer.bin. One interface for all of them.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace patchllm {

namespace jinja {
class Template;
}

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // add_special: add BOS/EOS exactly as HF `tokenizer(text)` does for this tokenizer (post-processor /
  // tokenizer_config add_bos_token). Special tokens written in the text are matched as HF does.
  virtual std::vector<int> encode(const std::string& text, bool add_special = true) const = 0;
  // skip_special: drop special/control tokens, as HF decode(skip_special_tokens=True).
  virtual std::string decode(const std::vector<int>& ids, bool skip_special = true) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;                    // -1 if none
  virtual int eos_id() const = 0;                    // -1 if none
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
  size_t _emitted = 0;  // ids [0, _emitted) have been turned into text
  size_t _prefix = 0;   // decoding restarts at _ids[_prefix] so that a push costs O(window), not O(all ids)
};

// Streaming detokenizer with stop strings: the text is cut before the first occurrence of any stop string (one may
// span several ids), and push() returns only text that no stop string can still start in, so a streamed output never
// shows part of one. Empty stop strings are refused (InvalidArgument).
class StopStringDecoder {
 public:
  StopStringDecoder(const Tokenizer& tok, std::vector<std::string> stops);
  // Decodes ids (the prompt) without output, so the first generated piece decodes in context (leading spaces).
  void prime(const std::vector<int>& ids);
  // The text newly safe to show; "" once stopped.
  std::string push(int id);
  // At the end of generation: the text held back, unless stopped.
  std::string flush();
  bool stopped() const { return _stopped; }

 private:
  StreamDecoder _dec;
  std::vector<std::string> _stops;
  std::string _pending;  // decoded, not yet returned: a stop string may start in it
  bool _stopped = false;
};

// A model's chat template, rendered as transformers' tokenizer.apply_chat_template(messages, add_generation_prompt=...,
// tokenize=False) renders it: the template sees `messages`, `tools` and `documents` (none), `add_generation_prompt`,
// the special tokens' texts (bos_token, eos_token, unk_token, pad_token, ... as tokenizer_config.json names them) and
// HF's globals raise_exception and strftime_now. The text is then encoded with encode(text, /*add_special=*/false), as
// apply_chat_template(tokenize=True) does: the template writes BOS and the turn markers itself.
class ChatTemplate {
 public:
  // `source` is Jinja (syntax errors throw FormatError naming `origin` and the line); `variables` is a JSON object of
  // top-level variables every render gets (the special tokens).
  ChatTemplate(const std::string& source, std::string origin, nlohmann::ordered_json variables = {});
  ~ChatTemplate();
  // The template of a model directory: `template_file` if given, else chat_template.jinja (where newer transformers
  // save it), else tokenizer_config.json's "chat_template" (a string, or a list of {"name", "template"} of which
  // "default" is taken); nullptr when there is none. Special tokens come from tokenizer_config.json; `tok`, if given,
  // supplies bos_token / eos_token where the config has none (a tokenizer.model-only directory).
  static std::unique_ptr<ChatTemplate> load(const std::string& model_dir, const Tokenizer* tok = nullptr,
                                            const std::string& template_file = "");
  // messages: a JSON array of objects, each with a string "role". `extra` adds or overrides top-level variables (HF's
  // **template_kwargs). Errors (the template's raise_exception, a missing value) throw FormatError naming the origin.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;
  const std::string& origin() const { return _origin; }
  const std::string& source_sha256() const { return _sha256; }  // of the Jinja source, for provenance

 private:
  std::string _origin, _sha256;
  std::unique_ptr<jinja::Template> _tpl;
  nlohmann::ordered_json _vars;
};

// Builds a tokenizer from an in-memory tokenizer.json (and tokenizer_config.json, may be null); `origin` names the
// file in error messages.
TokenizerPtr tokenizer_from_json(const nlohmann::json& tokenizer_json, const nlohmann::json& tokenizer_config,
                                 const std::string& origin);

// Piece types, numbered as SentencePiece's ModelProto and GGUF's tokenizer.ggml.token_type.
enum TokenType : int {
  TOKEN_TYPE_NORMAL = 1,
  TOKEN_TYPE_UNKNOWN = 2,
  TOKEN_TYPE_CONTROL = 3,
  TOKEN_TYPE_USER_DEFINED = 4,
  TOKEN_TYPE_UNUSED = 5,
  TOKEN_TYPE_BYTE = 6,
};

// Special-token choices shared by the builders below (ids index the vocabulary; -1 = none).
struct TokenizerSpecials {
  int bos_id = -1;
  int eos_id = -1;
  int unk_id = -1;
  bool add_bos = false;
  bool add_eos = false;
};

// SentencePiece-style BPE vocabulary (LLaMA-2, Mistral, llama2.c, GGUF tokenizer.ggml.model "llama") -> HF
// tokenizer.json as transformers' LlamaConverter writes it (legacy normalizer Prepend+Replace, byte_fallback, merges
// from piece scores as SentencePieceExtractor derives them, control/unknown pieces as special added tokens,
// user-defined pieces as added tokens, TemplateProcessing for BOS/EOS). Pieces use '▁' for spaces.
nlohmann::json tokenizer_json_from_spm_pieces(const std::vector<std::string>& pieces, const std::vector<float>& scores,
                                              const std::vector<int>& types, const TokenizerSpecials& specials);
// The matching tokenizer_config.json (LlamaTokenizerFast, add_bos_token/add_eos_token, legacy).
nlohmann::json tokenizer_config_from_spm_pieces(const std::vector<std::string>& pieces,
                                                const TokenizerSpecials& specials);
// Byte-level BPE (GGUF tokenizer.ggml.model "gpt2" with tokenizer.ggml.pre "llama-bpe"/"llama3" or "qwen2") -> HF
// tokenizer.json: Split(pre-tokenizer regex) + ByteLevel, ByteLevel decoder. `merges` are "a b" strings as GGUF
// stores them; `pre_kind` is "llama3" or "qwen2". Control pieces become special added tokens.
nlohmann::json tokenizer_json_from_bpe(const std::vector<std::string>& tokens, const std::vector<std::string>& merges,
                                       const std::vector<int>& types, const std::string& pre_kind,
                                       const TokenizerSpecials& specials);

// The pre-tokenizer regexes of LLaMA-3 and Qwen2 (as in their tokenizer.json).
extern const char* const kTokenizerRegexLlama3;
extern const char* const kTokenizerRegexQwen2;

// llama2.c tokenizer.bin -> an HF tokenizer.json document (SentencePiece-style BPE with byte fallback, merges derived
// from piece scores) plus tokenizer_config.json; used by `patchllm convert --from llama2c`.
nlohmann::json tokenizer_json_from_llama2c(const std::string& bin_path);
nlohmann::json tokenizer_config_from_llama2c(const std::string& bin_path);

}  // namespace patchllm
