// Vocabularies from other formats (SentencePiece pieces, GGUF byte-level BPE, llama2.c tokenizer.bin) -> HF
// tokenizer.json documents, written the way transformers' converters write them so that HF gives the same ids.
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace patchllm {

using json = nlohmann::json;

namespace {

json added_token(int id, const std::string& content, bool special) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", special}};
}

// TemplateProcessing as transformers' LlamaTokenizerFast.update_post_processor builds it.
json template_processing(const std::vector<std::string>& names, const TokenizerSpecials& sp) {
  json single = json::array(), pair = json::array(), specials = json::object();
  auto special = [&](int id, int type_id) {
    return json{{"SpecialToken", {{"id", names[id]}, {"type_id", type_id}}}};
  };
  bool bos = sp.add_bos && sp.bos_id >= 0, eos = sp.add_eos && sp.eos_id >= 0;
  for (int seq = 0; seq < 2; ++seq) {
    json& t = seq == 0 ? single : pair;
    for (int part = 0; part <= seq; ++part) {
      if (bos) t.push_back(special(sp.bos_id, part));
      t.push_back({{"Sequence", {{"id", part == 0 ? "A" : "B"}, {"type_id", part}}}});
      if (eos) t.push_back(special(sp.eos_id, part));
    }
  }
  for (int id : {bos ? sp.bos_id : -1, eos ? sp.eos_id : -1})
    if (id >= 0) specials[names[id]] = {{"id", names[id]}, {"ids", {id}}, {"tokens", {names[id]}}};
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

void check_specials(const TokenizerSpecials& sp, size_t n) {
  for (int id : {sp.bos_id, sp.eos_id, sp.unk_id})
    PATCHLLM_CHECK(id < static_cast<int>(n), InvalidArgument, "tokenizer: special id ", id, " is outside a vocabulary of ",
                   n, " pieces");
}

}  // namespace

// transformers.convert_slow_tokenizer.generate_merges(vocab, vocab_scores): every split of a piece into two vocab
// pieces is a merge; merges sorted by (piece score, len(left), len(right)) descending, ties in piece-id order.
static std::vector<std::pair<std::string, std::string>> spm_generate_merges(const std::vector<std::string>& pieces,
                                                                            const std::vector<float>& scores) {
  std::unordered_map<std::string, int> vocab;
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = static_cast<int>(i);  // later duplicates win, as dict
  struct M {
    int l, r;
    float score;
    size_t len_l, len_r;
  };
  std::vector<M> merges;
  std::vector<bool> seen(pieces.size(), false);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const std::string& p = pieces[i];
    // vocab_scores is a dict: a repeated piece keeps its first position and its last score.
    auto vit = vocab.find(p);
    if (seen[vit->second]) continue;
    seen[vit->second] = true;
    float score = scores[vit->second];
    std::vector<M> local;
    size_t cps = 0;
    for (size_t k = 0; k < p.size();) {
      k += std::max<size_t>(1, utf8_char_len(p, k));
      ++cps;
      if (k >= p.size()) break;
      auto a = vocab.find(p.substr(0, k)), b = vocab.find(p.substr(k));
      if (a != vocab.end() && b != vocab.end()) local.push_back({a->second, b->second, score, cps, 0});
    }
    size_t total = utf8_count(p);
    for (auto& m : local) m.len_r = total - m.len_l;
    std::sort(local.begin(), local.end(), [](const M& x, const M& y) { return x.l != y.l ? x.l < y.l : x.r < y.r; });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const M& x, const M& y) {
    if (x.score != y.score) return x.score > y.score;
    if (x.len_l != y.len_l) return x.len_l > y.len_l;
    return x.len_r > y.len_r;
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (auto& m : merges) out.emplace_back(pieces[m.l], pieces[m.r]);
  return out;
}

json tokenizer_json_from_spm_pieces(const std::vector<std::string>& pieces, const std::vector<float>& scores,
                                    const std::vector<int>& types, const TokenizerSpecials& specials) {
  PATCHLLM_CHECK(!pieces.empty() && scores.size() == pieces.size() && types.size() == pieces.size(), InvalidArgument,
                 "tokenizer: spm pieces/scores/types sizes differ (", pieces.size(), "/", scores.size(), "/",
                 types.size(), ")");
  check_specials(specials, pieces.size());
  json vocab = json::object();
  bool byte_fallback = false;
  int unk = specials.unk_id;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (!vocab.contains(pieces[i])) vocab[pieces[i]] = static_cast<int>(i);
    byte_fallback = byte_fallback || types[i] == TOKEN_TYPE_BYTE;
    if (unk < 0 && types[i] == TOKEN_TYPE_UNKNOWN) unk = static_cast<int>(i);
  }
  json merges = json::array();
  for (auto& [a, b] : spm_generate_merges(pieces, scores)) merges.push_back({a, b});

  json added = json::array();
  for (size_t i = 0; i < pieces.size(); ++i) {
    int id = static_cast<int>(i);
    bool special = types[i] == TOKEN_TYPE_CONTROL || types[i] == TOKEN_TYPE_UNKNOWN || id == specials.bos_id ||
                   id == specials.eos_id || id == unk;
    if (special || types[i] == TOKEN_TYPE_USER_DEFINED) added.push_back(added_token(id, pieces[i], special));
  }
  const std::string space = kSpmSpace;
  json model = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", unk >= 0 ? json(pieces[unk]) : json()},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", byte_fallback},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};
  json normalizer = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", space}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}};
  json decoder = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  return {{"version", "1.0"},          {"truncation", nullptr},
          {"padding", nullptr},        {"added_tokens", added},
          {"normalizer", normalizer},  {"pre_tokenizer", nullptr},
          {"post_processor", template_processing(pieces, specials)},
          {"decoder", decoder},        {"model", model}};
}

json tokenizer_config_from_spm_pieces(const std::vector<std::string>& pieces, const TokenizerSpecials& specials) {
  check_specials(specials, pieces.size());
  auto name = [&](int id) { return id >= 0 ? json(pieces[id]) : json(); };
  return {{"tokenizer_class", "LlamaTokenizer"},
          {"add_bos_token", specials.add_bos},
          {"add_eos_token", specials.add_eos},
          {"bos_token", name(specials.bos_id)},
          {"eos_token", name(specials.eos_id)},
          {"unk_token", name(specials.unk_id)},
          {"pad_token", nullptr},
          {"legacy", true},
          {"clean_up_tokenization_spaces", false}};
}

json tokenizer_json_from_bpe(const std::vector<std::string>& tokens, const std::vector<std::string>& merges,
                             const std::vector<int>& types, const std::string& pre_kind,
                             const TokenizerSpecials& specials) {
  PATCHLLM_CHECK(!tokens.empty() && (types.empty() || types.size() == tokens.size()), InvalidArgument,
                 "tokenizer: bpe tokens/types sizes differ (", tokens.size(), "/", types.size(), ")");
  PATCHLLM_CHECK(pre_kind == "llama3" || pre_kind == "qwen2", InvalidArgument, "tokenizer: unknown byte-level pre-tokenizer '",
                 pre_kind, "' (expected llama3 or qwen2)");
  check_specials(specials, tokens.size());
  json vocab = json::object(), added = json::array(), jm = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!vocab.contains(tokens[i])) vocab[tokens[i]] = static_cast<int>(i);
    int t = types.empty() ? TOKEN_TYPE_NORMAL : types[i];
    int id = static_cast<int>(i);
    bool special = t == TOKEN_TYPE_CONTROL || id == specials.bos_id || id == specials.eos_id;
    if (special || t == TOKEN_TYPE_USER_DEFINED) added.push_back(added_token(id, tokens[i], special));
  }
  for (size_t i = 0; i < merges.size(); ++i) {
    size_t sp = merges[i].find(' ');
    PATCHLLM_CHECK(sp != std::string::npos, InvalidArgument, "tokenizer: merge ", i, " '", merges[i],
                   "' has no space separator");
    jm.push_back({merges[i].substr(0, sp), merges[i].substr(sp + 1)});
  }
  const bool llama3 = pre_kind == "llama3";
  json pre = {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"},
                 {"pattern", {{"Regex", llama3 ? kTokenizerRegexLlama3 : kTokenizerRegexQwen2}}},
                 {"behavior", "Isolated"},
                 {"invert", false}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  json model = {{"type", "BPE"},          {"dropout", nullptr},       {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                {"byte_fallback", false}, {"ignore_merges", llama3}, {"vocab", vocab},
                {"merges", jm}};
  json post = {{"type", "Sequence"},
               {"processors",
                {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
                 template_processing(tokens, specials)}}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", llama3 ? json() : json{{"type", "NFC"}}},
          {"pre_tokenizer", pre},
          {"post_processor", post},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model", model}};
}

namespace {

struct Llama2cVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int> types;
};

// llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length, bytes. It stores '▁' as
// ' ' and BOS/EOS as "\n<s>\n" / "\n</s>\n"; ids 0/1/2 are <unk>/<s>/</s> and byte pieces are "<0xNN>".
Llama2cVocab llama2c_read(const std::string& path) {
  PATCHLLM_CHECK(file_exists(path), FormatError, path, ": no such file");
  std::string d = file_read(path);
  PATCHLLM_CHECK(d.size() >= 4, FormatError, path, ": too short for a llama2.c tokenizer (", d.size(), " bytes)");
  int32_t max_len = 0;
  std::memcpy(&max_len, d.data(), 4);
  PATCHLLM_CHECK(max_len > 0 && max_len < 4096, FormatError, path, ": implausible max_token_length ", max_len,
                 " (not a llama2.c tokenizer.bin?)");
  Llama2cVocab v;
  size_t off = 4;
  while (off < d.size()) {
    PATCHLLM_CHECK(off + 8 <= d.size(), FormatError, path, ": truncated record header at byte ", off);
    float score;
    int32_t len;
    std::memcpy(&score, d.data() + off, 4);
    std::memcpy(&len, d.data() + off + 4, 4);
    off += 8;
    PATCHLLM_CHECK(len >= 0 && len <= max_len + 8 && off + len <= d.size(), FormatError, path, ": bad token length ",
                   len, " for token ", v.pieces.size());
    std::string s = d.substr(off, len);
    off += len;
    const int id = static_cast<int>(v.pieces.size());
    int type = TOKEN_TYPE_NORMAL;
    if (id == 0) {
      type = TOKEN_TYPE_UNKNOWN;
    } else if (id == 1 || id == 2) {
      // strip the "\n" llama2.c wraps around BOS/EOS so the piece reads "<s>" / "</s>" as in SentencePiece
      if (s.size() >= 2 && s.front() == '\n' && s.back() == '\n') s = s.substr(1, s.size() - 2);
      type = TOKEN_TYPE_CONTROL;
    } else if (s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>') {
      type = TOKEN_TYPE_BYTE;
    } else {
      std::string t;
      for (char c : s) {
        if (c == ' ')
          t += kSpmSpace;
        else
          t += c;
      }
      s = t;
    }
    PATCHLLM_CHECK(utf8_valid(s), FormatError, path, ": token ", id, " is not valid UTF-8");
    v.pieces.push_back(s);
    v.scores.push_back(score);
    v.types.push_back(type);
  }
  PATCHLLM_CHECK(v.pieces.size() >= 3, FormatError, path, ": only ", v.pieces.size(), " tokens (need <unk>, <s>, </s>)");
  return v;
}

TokenizerSpecials llama2c_specials() {
  TokenizerSpecials sp;
  sp.unk_id = 0;
  sp.bos_id = 1;
  sp.eos_id = 2;
  sp.add_bos = true;
  sp.add_eos = false;
  return sp;
}

}  // namespace

json tokenizer_json_from_llama2c(const std::string& bin_path) {
  Llama2cVocab v = llama2c_read(bin_path);
  return tokenizer_json_from_spm_pieces(v.pieces, v.scores, v.types, llama2c_specials());
}

json tokenizer_config_from_llama2c(const std::string& bin_path) {
  Llama2cVocab v = llama2c_read(bin_path);
  return tokenizer_config_from_spm_pieces(v.pieces, llama2c_specials());
}

}  // namespace patchllm
