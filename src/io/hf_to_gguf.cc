#include "io/hf_to_gguf.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <regex>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "gguf/gguf_hf.h"
#include "io/safetensors.h"
#include "model/packed_linear.h"
#include "tokenizer/tokenizer.h"

namespace patchllm {

namespace {

bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// gguf-py's TextModel.does_token_look_special: added tokens that llama.cpp should treat as control tokens even when
// tokenizer.json does not flag them special.
bool looks_special(const std::string& t) {
  auto wrapped = [&](const std::string& a, const std::string& b) {
    return t.size() >= a.size() + b.size() && t.compare(0, a.size(), a) == 0 && ends_with(t, b);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xef\xbd\x9c", "\xef\xbd\x9c>") || wrapped("<unused", ">");
}

// Content of a tokenizer_config.json special-token entry: a string or {"content": ...}.
std::string special_content(const nlohmann::json& cfg, const std::string& key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return "";
}

// The Split regex of a byte-level pre-tokenizer (Sequence[Split, ByteLevel] as Qwen2 and LLaMA 3 ship it).
std::string split_regex(const nlohmann::json& pre) {
  if (!pre.is_object()) return "";
  if (pre.value("type", "") == "Split" && pre.contains("pattern") && pre["pattern"].contains("Regex"))
    return pre["pattern"]["Regex"].get<std::string>();
  if (pre.value("type", "") == "Sequence" && pre.contains("pretokenizers"))
    for (const auto& p : pre["pretokenizers"])
      if (std::string r = split_regex(p); !r.empty()) return r;
  return "";
}

bool has_type(const nlohmann::json& j, const std::string& type, const char* list_key) {
  if (!j.is_object()) return false;
  if (j.value("type", "") == type) return true;
  if (j.contains(list_key))
    for (const auto& p : j[list_key])
      if (has_type(p, type, list_key)) return true;
  return false;
}

// True when the normalizer / pre-tokenizer put "▁" before the text (SentencePiece add_dummy_prefix).
bool adds_space_prefix(const nlohmann::json& tok) {
  std::function<bool(const nlohmann::json&)> walk = [&](const nlohmann::json& j) -> bool {
    if (!j.is_object()) return false;
    const std::string t = j.value("type", "");
    if (t == "Prepend") return j.value("prepend", "") == "\xe2\x96\x81";
    if (t == "Metaspace") return j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never") != "never";
    for (const char* k : {"normalizers", "pretokenizers"})
      if (j.contains(k))
        for (const auto& p : j[k])
          if (walk(p)) return true;
    return false;
  };
  return walk(tok.value("normalizer", nlohmann::json())) || walk(tok.value("pre_tokenizer", nlohmann::json()));
}

// Merges as GGUF stores them ("a b"): tokenizer.json has strings, or (transformers >= 4.45) pairs, whose spaces
// gguf-py encodes as U+0120.
std::vector<std::string> merges_of(const nlohmann::json& model, const std::string& origin) {
  std::vector<std::string> out;
  if (!model.contains("merges")) return out;
  for (const auto& m : model["merges"]) {
    if (m.is_string()) {
      out.push_back(m.get<std::string>());
    } else {
      PATCHLLM_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), InvalidArgument, origin,
                     ": a merge is neither \"a b\" nor [\"a\", \"b\"]");
      std::string a = m[0].get<std::string>(), b = m[1].get<std::string>();
      auto enc = [](std::string s) {
        std::string r;
        for (char c : s) r += c == ' ' ? std::string("\xc4\xa0") : std::string(1, c);
        return r;
      };
      out.push_back(enc(a) + " " + enc(b));
    }
  }
  return out;
}

}  // namespace

GgufExportDtype gguf_export_dtype_parse(const std::string& s) {
  if (s == "f32") return GgufExportDtype::F32;
  if (s == "f16") return GgufExportDtype::F16;
  if (s == "bf16") return GgufExportDtype::BF16;
  throw InvalidArgument(str("convert: unknown --dtype '", s, "' (supported: f16, bf16, f32)"));
}

std::vector<std::pair<std::string, GgufValue>> hf_gguf_tokenizer(const nlohmann::json& tok,
                                                                  const nlohmann::json& tcfg,
                                                                  const nlohmann::json& config,
                                                                  const std::string& arch, int64_t n_vocab,
                                                                  const std::string& origin) {
  PATCHLLM_CHECK(tok.is_object() && tok.contains("model") && tok["model"].is_object(), InvalidArgument, origin,
                 ": no tokenizer model");
  const nlohmann::json& model = tok["model"];
  const std::string type = model.value("type", "");
  PATCHLLM_CHECK(type == "BPE", InvalidArgument, origin, ": tokenizer model '", type,
                 "' cannot be represented in GGUF (supported: BPE with byte fallback, byte-level BPE)");
  PATCHLLM_CHECK(model.contains("vocab") && model["vocab"].is_object(), InvalidArgument, origin, ": BPE without vocab");

  // Tokens by id: the vocabulary, then added tokens (which may repeat vocabulary entries).
  std::map<int64_t, std::string> by_id;
  std::map<int64_t, bool> added_special;  // id -> special flag, for added tokens
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    PATCHLLM_CHECK(it->is_number_integer() && it->get<int64_t>() >= 0, InvalidArgument, origin, ": token '",
                   it.key(), "' has no valid id");
    by_id[it->get<int64_t>()] = it.key();
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array())
    for (const auto& a : tok["added_tokens"]) {
      PATCHLLM_CHECK(a.contains("id") && a["id"].is_number_integer() && a["id"].get<int64_t>() >= 0 &&
                         a.contains("content") && a["content"].is_string(),
                     InvalidArgument, origin, ": malformed added_tokens entry");
      const int64_t id = a["id"].get<int64_t>();
      by_id[id] = a["content"].get<std::string>();
      added_special[id] = a.value("special", false);
    }
  PATCHLLM_CHECK(by_id.empty() || by_id.rbegin()->first < n_vocab, InvalidArgument, origin, ": token id ",
                 by_id.empty() ? 0 : by_id.rbegin()->first, " is beyond the embedding's ", n_vocab, " rows");
  std::map<std::string, int64_t> id_of;
  for (const auto& [id, t] : by_id) id_of.emplace(t, id);

  const bool spm = model.value("byte_fallback", false);
  const std::string unk = model.contains("unk_token") && model["unk_token"].is_string()
                              ? model["unk_token"].get<std::string>() : "";
  static const std::regex byte_re("<0x[0-9A-Fa-f]{2}>");
  std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
  std::vector<int64_t> types(static_cast<size_t>(n_vocab));
  for (int64_t i = 0; i < n_vocab; ++i) {
    auto it = by_id.find(i);
    const std::string pad = str("[PAD", i, "]");  // gguf-py's name for ids without a token
    if (it == by_id.end() || it->second == pad) {
      tokens[i] = pad;
      types[i] = TOKEN_TYPE_UNUSED;
      continue;
    }
    tokens[i] = it->second;
    auto a = added_special.find(i);
    if (spm && std::regex_match(it->second, byte_re))
      types[i] = TOKEN_TYPE_BYTE;
    else if (spm && !unk.empty() && it->second == unk)
      types[i] = TOKEN_TYPE_UNKNOWN;
    else if (a != added_special.end())
      types[i] = a->second || looks_special(it->second) ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_USER_DEFINED;
    else
      types[i] = TOKEN_TYPE_NORMAL;
  }
  const std::vector<std::string> merges = merges_of(model, origin);

  std::vector<std::pair<std::string, GgufValue>> kv;
  if (spm) {
    // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose result has the highest score; HF BPE merges
    // the pair of lowest rank. Scoring each piece by minus the rank of the first merge producing it gives the same
    // order; pieces no merge produces score below all of them.
    std::vector<double> scores(static_cast<size_t>(n_vocab), -1000.0 - static_cast<double>(merges.size()));
    std::vector<bool> scored(static_cast<size_t>(n_vocab), false);
    for (size_t r = 0; r < merges.size(); ++r) {
      const size_t sp = merges[r].find(' ');
      PATCHLLM_CHECK(sp != std::string::npos, InvalidArgument, origin, ": merge '", merges[r], "' has no space");
      auto it = id_of.find(merges[r].substr(0, sp) + merges[r].substr(sp + 1));
      if (it != id_of.end() && !scored[it->second]) {
        scores[it->second] = -static_cast<double>(r);
        scored[it->second] = true;
      }
    }
    kv.emplace_back("tokenizer.ggml.model", GgufValue::make_string("llama"));
    kv.emplace_back("tokenizer.ggml.pre", GgufValue::make_string("default"));
    kv.emplace_back("tokenizer.ggml.tokens", GgufValue::make_string_array(tokens));
    kv.emplace_back("tokenizer.ggml.scores", GgufValue::make_float_array(GgufType::FLOAT32, scores));
    kv.emplace_back("tokenizer.ggml.token_type", GgufValue::make_int_array(GgufType::INT32, types));
  } else {
    PATCHLLM_CHECK(has_type(tok.value("pre_tokenizer", nlohmann::json()), "ByteLevel", "pretokenizers"),
                   InvalidArgument, origin,
                   ": BPE without byte fallback and without a ByteLevel pre-tokenizer cannot be represented in GGUF");
    const std::string re = split_regex(tok["pre_tokenizer"]);
    std::string pre;
    if (re == kTokenizerRegexQwen2) pre = "qwen2";
    else if (re == kTokenizerRegexLlama3) pre = "llama-bpe";
    PATCHLLM_CHECK(!pre.empty(), InvalidArgument, origin,
                   ": byte-level pre-tokenizer regex is not one llama.cpp knows by name (supported: Qwen2, LLaMA 3)");
    kv.emplace_back("tokenizer.ggml.model", GgufValue::make_string("gpt2"));
    kv.emplace_back("tokenizer.ggml.pre", GgufValue::make_string(pre));
    kv.emplace_back("tokenizer.ggml.tokens", GgufValue::make_string_array(tokens));
    kv.emplace_back("tokenizer.ggml.token_type", GgufValue::make_int_array(GgufType::INT32, types));
    kv.emplace_back("tokenizer.ggml.merges", GgufValue::make_string_array(merges));
  }

  // Special ids as gguf-py's SpecialVocab finds them: tokenizer_config.json's <typ>_token looked up among the added
  // tokens, else config.json's <typ>_token_id.
  static const std::vector<std::pair<std::string, std::string>> kinds = {
      {"bos", "bos"}, {"eos", "eos"}, {"unk", "unknown"}, {"sep", "seperator"},  // sic: gguf's key
      {"pad", "padding"}, {"cls", "cls"}, {"mask", "mask"}};
  std::map<std::string, int64_t> special;
  for (const auto& [typ, key] : kinds) {
    int64_t id = -1;
    const std::string content = special_content(tcfg, typ + "_token");
    if (!content.empty())
      for (const auto& [aid, sp] : added_special)
        if (by_id[aid] == content) { id = aid; break; }
    if (id < 0 && config.contains(typ + "_token_id") && config[typ + "_token_id"].is_number_integer())
      id = config[typ + "_token_id"].get<int64_t>();
    if (id < 0) continue;
    PATCHLLM_CHECK(id < n_vocab, InvalidArgument, origin, ": ", typ, " token id ", id, " is outside the vocabulary of ",
                   n_vocab);
    special[typ] = id;
    kv.emplace_back("tokenizer.ggml." + key + "_token_id", GgufValue::make_int(GgufType::UINT32, id));
  }
  // add_bos/add_eos: tokenizer_config.json, else the post-processor template (what HF `tokenizer(text)` adds).
  for (const char* typ : {"bos", "eos"}) {
    const std::string k = str("add_", typ, "_token");
    if (tcfg.contains(k) && tcfg[k].is_boolean()) {
      kv.emplace_back("tokenizer.ggml." + k, GgufValue::make_bool(tcfg[k].get<bool>()));
      continue;
    }
    const nlohmann::json pp = tok.value("post_processor", nlohmann::json());
    std::vector<nlohmann::json> procs;
    if (pp.is_object()) {
      if (pp.contains("processors")) for (const auto& p : pp["processors"]) procs.push_back(p);
      else procs.push_back(pp);
    }
    for (const auto& p : procs) {
      if (p.value("type", "") != "TemplateProcessing" || !p.contains("single") || p["single"].empty()) continue;
      const auto& single = p["single"];
      const auto& e = std::string(typ) == "bos" ? single.front() : single.back();
      bool add = false;
      if (e.contains("SpecialToken") && special.count(typ))
        add = e["SpecialToken"].value("id", "") == tokens[special[typ]];
      kv.emplace_back("tokenizer.ggml." + k, GgufValue::make_bool(add));
    }
  }
  if (spm) kv.emplace_back("tokenizer.ggml.add_space_prefix", GgufValue::make_bool(adds_space_prefix(tok)));
  if (tcfg.contains("chat_template") && tcfg["chat_template"].is_string())
    kv.emplace_back("tokenizer.chat_template", GgufValue::make_string(tcfg["chat_template"].get<std::string>()));
  (void)arch;
  return kv;
}

void hf_convert_to_gguf(const std::string& hf_dir, const std::string& out_path, GgufExportDtype dtype, bool force) {
  PATCHLLM_CHECK(dir_exists(hf_dir), InvalidArgument, hf_dir, ": not a directory");
  const std::string cfg_path = path_join(hf_dir, "config.json");
  const std::string tok_path = path_join(hf_dir, "tokenizer.json");
  const std::string tcfg_path = path_join(hf_dir, "tokenizer_config.json");
  PATCHLLM_CHECK(file_exists(cfg_path), FormatError, cfg_path, ": missing (not a Hugging Face model directory)");
  PATCHLLM_CHECK(file_exists(tok_path), FormatError, tok_path, ": missing (a GGUF file embeds the tokenizer)");
  PATCHLLM_CHECK(!dir_exists(out_path), InvalidArgument, out_path, ": is a directory (expected a .gguf file path)");
  PATCHLLM_CHECK(force || !file_exists(out_path), InvalidArgument, out_path, ": exists (use --force to overwrite)");
  const nlohmann::json config = json_read_file(cfg_path);
  const std::string arch = hf_gguf_architecture(config, cfg_path);
  const nlohmann::json tok = json_read_file(tok_path);
  const nlohmann::json tcfg = file_exists(tcfg_path) ? json_read_file(tcfg_path) : nlohmann::json::object();
  Checkpoint ck(hf_dir);
  checkpoint_require_dense(ck, hf_dir, "GGUF export");
  PATCHLLM_CHECK(ck.has("model.embed_tokens.weight"), FormatError, hf_dir, ": no model.embed_tokens.weight");
  const int64_t n_vocab = ck.entry("model.embed_tokens.weight").shape.at(0);
  const bool tied = config.value("tie_word_embeddings", arch == "gemma3") || !ck.has("lm_head.weight");

  const uint32_t file_type = dtype == GgufExportDtype::F32 ? 0 : dtype == GgufExportDtype::F16 ? 1 : 32;
  std::string name = hf_dir;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  name = name.substr(name.find_last_of('/') == std::string::npos ? 0 : name.find_last_of('/') + 1);

  GgufWriter w;
  w.set_alignment(32);
  for (auto& [k, v] : hf_gguf_metadata(config, arch, name, file_type, cfg_path)) w.add_kv(k, std::move(v));
  for (auto& [k, v] : hf_gguf_tokenizer(tok, tcfg, config, arch, n_vocab, tok_path)) w.add_kv(k, std::move(v));

  // Tensor data must outlive write(): one buffer per tensor (a deque keeps them in place).
  std::deque<std::vector<uint8_t>> bufs;
  const std::vector<float> rope_freqs = hf_gguf_llama3_rope_freqs(config);
  if (!rope_freqs.empty())
    w.add_tensor("rope_freqs.weight", GgmlType::F32, {static_cast<int64_t>(rope_freqs.size())}, rope_freqs.data(),
                 rope_freqs.size() * sizeof(float));

  // GGUF order as convert_hf_to_gguf.py emits it for a single-file checkpoint: embeddings, layers, then the head.
  std::vector<std::pair<std::string, std::string>> order;  // (gguf name, hf name)
  for (const std::string& n : ck.names()) {
    std::string g;
    try {
      g = hf_gguf_tensor_name(arch, n);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(str(hf_dir, ": ", e.what()));
    }
    if (g.empty() || (g == "output.weight" && tied)) continue;
    order.emplace_back(g, n);
  }
  auto rank = [](const std::string& g) -> std::pair<int64_t, std::string> {
    if (g == "token_embd.weight") return {-1, g};
    if (g.rfind("blk.", 0) == 0) return {std::stoll(g.substr(4)), g};
    return {1LL << 40, g};
  };
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) { return rank(a.first) < rank(b.first); });

  Progress progress("convert", static_cast<long>(order.size()));
  long done = 0;
  for (const auto& [g, n] : order) {
    progress.update(++done, g);
    torch::Tensor t = ck.load(n).contiguous();
    const std::vector<int64_t> shape = t.sizes().vec();
    PATCHLLM_CHECK(!shape.empty() && shape.size() <= 2, FormatError, hf_dir, ": tensor '", n, "' has ", shape.size(),
                   " dimensions (expected 1 or 2)");
    // llama.cpp wants 1-D tensors (norms, biases) in F32, as convert_hf_to_gguf.py writes them.
    const GgmlType type = shape.size() == 1 || dtype == GgufExportDtype::F32 ? GgmlType::F32
                          : dtype == GgufExportDtype::F16                    ? GgmlType::F16
                                                                             : GgmlType::BF16;
    const int64_t numel = t.numel();
    bufs.emplace_back();
    std::vector<uint8_t>& buf = bufs.back();
    if (type == GgmlType::BF16 && t.scalar_type() == torch::kBFloat16) {
      buf.resize(numel * 2);  // bit copy: bf16 checkpoints stay bit-exact, zeros included
      std::memcpy(buf.data(), t.data_ptr(), buf.size());
    } else {
      torch::Tensor x = t.to(torch::kFloat32).contiguous();
      if (float s = hf_gguf_norm_shift(arch, n)) x = x + s;
      const float* src = x.data_ptr<float>();
      if (type == GgmlType::F32) {
        buf.resize(numel * 4);
        std::memcpy(buf.data(), src, buf.size());
      } else {
        buf.resize(numel * 2);
        auto* dst = reinterpret_cast<uint16_t*>(buf.data());
        for (int64_t i = 0; i < numel; ++i) {
          if (type == GgmlType::BF16) {
            dst[i] = gguf_fp32_to_bf16(src[i]);
          } else {
            dst[i] = gguf_fp32_to_fp16(src[i]);
            PATCHLLM_CHECK(std::isfinite(gguf_fp16_to_fp32(dst[i])) || !std::isfinite(src[i]), InvalidArgument,
                           hf_dir, ": tensor '", n, "' has value ", src[i], " outside the F16 range (use --dtype bf16)");
          }
        }
      }
    }
    if (int64_t heads = hf_gguf_permute_heads(arch, config, n))
      hf_gguf_permute_rows(buf.data(), gguf_ggml_type_size(type), shape[0], numel / shape[0], heads);
    std::vector<int64_t> ne(shape.rbegin(), shape.rend());
    w.add_tensor(g, type, ne, buf.data(), buf.size());
  }
  progress.finish();
  w.write(out_path);
}

}  // namespace patchllm
