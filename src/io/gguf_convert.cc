#include "io/gguf_convert.h"

#include <dirent.h>

#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/provenance.h"
#include "gguf/gguf.h"
#include "gguf/gguf_hf.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace patchllm {

namespace {

int special_id(const GgufFile& f, const std::string& key, size_t vocab) {
  if (!f.has(key)) return -1;
  int64_t id = f.get_int(key);
  PATCHLLM_CHECK(id >= 0 && static_cast<size_t>(id) < vocab, FormatError, f.path(), ": ", key, " = ", id,
                 " is outside the vocabulary of ", vocab, " tokens");
  return static_cast<int>(id);
}

// tokenizer.ggml.pre -> the byte-level pre-tokenizer kinds tokenizer_json_from_bpe knows.
std::string bpe_pre_kind(const GgufFile& f) {
  std::string pre = f.get_string("tokenizer.ggml.pre", "default");
  if (pre == "qwen2") return "qwen2";
  if (pre == "llama-bpe" || pre == "llama3") return "llama3";
  throw InvalidArgument(str(f.path(), ": unsupported GGUF pre-tokenizer '", pre,
                            "' for a gpt2 (byte-level BPE) vocabulary (supported: qwen2, llama-bpe)"));
}

}  // namespace

void gguf_hf_tokenizer(const GgufFile& f, nlohmann::json& tok, nlohmann::json& cfg) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  const std::vector<std::string>& tokens = f.get_strings("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  std::vector<int> types(n, TOKEN_TYPE_NORMAL);
  if (f.has("tokenizer.ggml.token_type")) {
    const auto& t = f.get_ints("tokenizer.ggml.token_type");
    PATCHLLM_CHECK(t.size() == n, FormatError, f.path(), ": tokenizer.ggml.token_type has ", t.size(),
                   " entries for ", n, " tokens");
    for (size_t i = 0; i < n; ++i) types[i] = static_cast<int>(t[i]);
  }
  TokenizerSpecials sp;
  sp.bos_id = special_id(f, "tokenizer.ggml.bos_token_id", n);
  sp.eos_id = special_id(f, "tokenizer.ggml.eos_token_id", n);
  sp.unk_id = special_id(f, "tokenizer.ggml.unknown_token_id", n);
  sp.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", model == "llama");
  sp.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
  // llama.cpp treats a BOS it is told to add but that does not exist as absent.
  if (sp.bos_id < 0) sp.add_bos = false;
  if (sp.eos_id < 0) sp.add_eos = false;

  if (model == "llama") {
    std::vector<float> scores(n, 0.0f);
    if (f.has("tokenizer.ggml.scores")) {
      const auto& s = f.get_floats("tokenizer.ggml.scores");
      PATCHLLM_CHECK(s.size() == n, FormatError, f.path(), ": tokenizer.ggml.scores has ", s.size(), " entries for ",
                     n, " tokens");
      for (size_t i = 0; i < n; ++i) scores[i] = static_cast<float>(s[i]);
    }
    tok = tokenizer_json_from_spm_pieces(tokens, scores, types, sp);
    cfg = tokenizer_config_from_spm_pieces(tokens, sp);
    const int pad = special_id(f, "tokenizer.ggml.padding_token_id", n);
    if (pad >= 0) cfg["pad_token"] = tokens[pad];
    // add_space_prefix = false (Gemma): no "▁" prepended to the text, so no leading space stripped when decoding.
    if (!f.get_bool("tokenizer.ggml.add_space_prefix", true)) {
      tok["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}};
      auto& decs = tok["decoder"]["decoders"];
      nlohmann::json kept = nlohmann::json::array();
      for (const auto& d : decs)
        if (d.value("type", "") != "Strip") kept.push_back(d);
      decs = kept;
      cfg["add_prefix_space"] = false;
    }
    if (f.get_string("general.architecture") == "gemma3") cfg["tokenizer_class"] = "GemmaTokenizer";
  } else if (model == "gpt2") {
    const std::string kind = bpe_pre_kind(f);
    const std::vector<std::string>& merges = f.get_strings("tokenizer.ggml.merges");
    tok = tokenizer_json_from_bpe(tokens, merges, types, kind, sp);
    auto name = [&](int id) { return id >= 0 ? nlohmann::json(tokens[id]) : nlohmann::json(); };
    const int pad = special_id(f, "tokenizer.ggml.padding_token_id", n);
    cfg = {{"tokenizer_class", kind == "qwen2" ? "Qwen2Tokenizer" : "PreTrainedTokenizerFast"},
           {"add_bos_token", sp.add_bos},
           {"add_eos_token", sp.add_eos},
           // Qwen2 has a bos id in its config but its tokenizer has no bos_token.
           {"bos_token", kind == "qwen2" ? nlohmann::json() : name(sp.bos_id)},
           {"eos_token", name(sp.eos_id)},
           {"pad_token", name(pad)},
           {"unk_token", nullptr},
           {"errors", "replace"},
           {"clean_up_tokenization_spaces", false},
           {"split_special_tokens", false}};
  } else {
    throw InvalidArgument(str(f.path(), ": unsupported GGUF tokenizer model '", model, "' (supported: llama, gpt2)"));
  }
  const std::string arch = f.get_string("general.architecture");
  if (f.has(arch + ".context_length")) cfg["model_max_length"] = f.get_int(arch + ".context_length");
  if (f.has("tokenizer.chat_template")) cfg["chat_template"] = f.get_string("tokenizer.chat_template");
}

std::map<std::string, torch::Tensor> gguf_hf_tensors(const GgufFile& f, bool fp32) {
  gguf_hf_check_architecture(f);
  const std::string arch = f.get_string("general.architecture");
  std::map<std::string, torch::Tensor> out;
  Progress progress("dequantize", static_cast<long>(f.tensors().size()));
  long done = 0;
  for (const GgufTensor& t : f.tensors()) {
    std::string name = gguf_hf_tensor_name(arch, t.name);
    progress.update(++done, t.name);
    if (name.empty()) continue;
    PATCHLLM_CHECK(!out.count(name), FormatError, f.path(), ": two tensors map to ", name);
    // x: shape() = ne reversed (row-major), e.g. attn_q ne [hidden, n_head*hd] -> [n_head*hd, hidden].
    std::vector<int64_t> shape = t.shape();
    torch::Tensor w = torch::empty(shape, torch::kFloat32);
    f.dequantize_into(t, w.data_ptr<float>());
    if (int64_t heads = gguf_hf_permute_heads(f, t.name)) {
      const int64_t rows = shape[0], cols = t.n_elements / std::max<int64_t>(rows, 1);
      gguf_hf_unpermute_rows(w.data_ptr<float>(), rows, cols, heads);
    }
    if (float shift = gguf_hf_norm_shift(arch, t.name)) w.add_(shift);
    out[name] = fp32 ? w : w.to(torch::kBFloat16);
  }
  progress.finish();
  PATCHLLM_CHECK(out.count("model.embed_tokens.weight"), FormatError, f.path(), ": no token_embd.weight tensor");
  return out;
}

GgufHfModel gguf_to_hf(const std::string& gguf_path, bool fp32) {
  GgufFile f(gguf_path);
  gguf_hf_check_architecture(f);
  GgufHfModel m;
  m.config = gguf_hf_config(f, fp32);
  m.generation_config = gguf_hf_generation_config(f);
  gguf_hf_tokenizer(f, m.tokenizer, m.tokenizer_config);
  m.tensors = gguf_hf_tensors(f, fp32);
  return m;
}

void gguf_convert_to_hf(const std::string& gguf_path, const std::string& out_dir, bool fp32, bool force) {
  if (dir_exists(out_dir) && !dir_is_empty(out_dir))
    PATCHLLM_CHECK(force, InvalidArgument, out_dir, ": output directory exists and is not empty (use --force)");
  GgufHfModel m = gguf_to_hf(gguf_path, fp32);
  dir_create(out_dir);
  auto prov = provenance_json({gguf_path});
  safetensors_write(path_join(out_dir, "model.safetensors"), m.tensors,
                    {{"format", "pt"}, {"patchllm_provenance", prov.dump()}});
  m.tensors.clear();
  file_write_atomic(path_join(out_dir, "config.json"), m.config.dump(2) + "\n");
  file_write_atomic(path_join(out_dir, "generation_config.json"), m.generation_config.dump(2) + "\n");
  file_write_atomic(path_join(out_dir, "tokenizer.json"), m.tokenizer.dump(2) + "\n");
  file_write_atomic(path_join(out_dir, "tokenizer_config.json"), m.tokenizer_config.dump(2) + "\n");
}

}  // namespace patchllm
