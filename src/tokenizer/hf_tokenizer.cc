// HF tokenizer.json runtime: added-token split -> normalizer -> pre-tokenizer -> BPE -> post-processor, and the
// decoder chain, following the `tokenizers` crate's order of operations so that ids match HF's exactly.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "core/json.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace patchllm {

using json = nlohmann::json;

const char* const kTokenizerRegexLlama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kTokenizerRegexQwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

namespace {

const char* const kRegexGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Rust's char::is_whitespace (lstrip/rstrip of added tokens).
bool is_rust_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
// Word characters for single_word added tokens (Rust is_alphanumeric || '_'); non-ASCII counts as a word character,
// an approximation that only matters for single_word tokens next to non-ASCII symbols.
bool is_word_char(uint32_t c) {
  return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= 0x80 && !is_rust_whitespace(c));
}

// GPT-2's byte <-> printable code point map used by ByteLevel.
struct ByteMap {
  uint32_t byte_to_cp[256];
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  std::string byte_to_utf8[256];
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      byte_to_cp[b] = printable ? b : 256 + n++;
      cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
      utf8_append(byte_to_utf8[b], byte_to_cp[b]);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

enum class SplitBehavior { REMOVED, ISOLATED, MERGED_WITH_PREVIOUS, MERGED_WITH_NEXT, CONTIGUOUS };

// Spans of `text` that a pattern matches (literal or regex).
std::vector<std::pair<size_t, size_t>> find_pattern(const std::string& text, const Regex* re, const std::string& lit) {
  if (re) return re->find_all(text);
  std::vector<std::pair<size_t, size_t>> out;
  if (lit.empty()) return out;
  for (size_t pos = 0, hit; (hit = text.find(lit, pos)) != std::string::npos; pos = hit + lit.size())
    out.emplace_back(hit, hit + lit.size());
  return out;
}

// tokenizers' NormalizedString::split: cut `text` at pattern matches, then keep/merge matches per `behavior`.
std::vector<std::pair<size_t, size_t>> split_spans(const std::string& text, const Regex* re, const std::string& lit,
                                                   SplitBehavior behavior, bool invert) {
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;  // (span, is_match)
  size_t prev = 0;
  for (auto [b, e] : find_pattern(text, re, lit)) {
    if (b > prev) parts.push_back({{prev, b}, false});
    parts.push_back({{b, e}, true});
    prev = e;
  }
  if (prev < text.size()) parts.push_back({{prev, text.size()}, false});
  if (invert)
    for (auto& p : parts) p.second = !p.second;
  std::vector<std::pair<size_t, size_t>> out;
  switch (behavior) {
    case SplitBehavior::REMOVED:
      for (auto& p : parts)
        if (!p.second) out.push_back(p.first);
      break;
    case SplitBehavior::ISOLATED:
      for (auto& p : parts) out.push_back(p.first);
      break;
    case SplitBehavior::MERGED_WITH_PREVIOUS: {
      bool prev_match = false;
      for (auto& p : parts) {
        if (p.second && !prev_match && !out.empty())
          out.back().second = p.first.second;
        else
          out.push_back(p.first);
        prev_match = p.second;
      }
      break;
    }
    case SplitBehavior::MERGED_WITH_NEXT: {
      bool prev_match = false;
      for (auto& p : parts) {
        if (prev_match && !p.second && !out.empty())
          out.back().second = p.first.second;
        else
          out.push_back(p.first);
        prev_match = p.second;
      }
      break;
    }
    case SplitBehavior::CONTIGUOUS: {
      bool prev_match = false;
      for (auto& p : parts) {
        if (p.second && prev_match && !out.empty())
          out.back().second = p.first.second;
        else
          out.push_back(p.first);
        prev_match = p.second;
      }
      break;
    }
  }
  return out;
}

// A pre-token on its way to the model; at_start: begins at offset 0 of the caller's text (Metaspace "first").
struct Piece {
  std::string text;
  bool at_start;
};

struct NormalizerStep {
  enum Kind { PREPEND, REPLACE, NFC, STRIP } kind;
  explicit NormalizerStep(Kind k, std::string a_ = "", std::string b_ = "") : kind(k), a(std::move(a_)), b(std::move(b_)) {}
  std::string a, b;  // PREPEND: a; REPLACE: pattern a (literal unless re) -> b
  std::shared_ptr<Regex> re;
  bool left = false, right = false;
};

struct PreTokenizerStep {
  enum Kind { SPLIT, BYTE_LEVEL, METASPACE } kind;
  explicit PreTokenizerStep(Kind k) : kind(k) {}
  std::shared_ptr<Regex> re;
  std::string literal;
  SplitBehavior behavior = SplitBehavior::ISOLATED;
  bool invert = false;
  bool add_prefix_space = false;  // BYTE_LEVEL
  std::string replacement;        // METASPACE
  enum Prepend { ALWAYS, FIRST, NEVER } prepend = ALWAYS;
  bool split = true;
};

struct DecoderStep {
  enum Kind { REPLACE, BYTE_FALLBACK, FUSE, STRIP, BYTE_LEVEL, METASPACE } kind;
  explicit DecoderStep(Kind k) : kind(k) {}
  std::string a, b;  // REPLACE a -> b; STRIP content a; METASPACE replacement a
  int start = 0, stop = 0;
  bool prepend = true;  // METASPACE: prepend_scheme != never
};

struct AddedToken {
  int id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

// Text segment after the added-token split: either plain text or an added token id.
struct Segment {
  std::string text;
  int id;  // -1: text
  bool at_start;
};

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const json& tj, const json& cfg, const std::string& origin) : _origin(origin) {
    try {
      parse(tj);
    } catch (const json::exception& e) {
      throw FormatError(str(origin, ": malformed tokenizer.json: ", e.what()));
    }
    // The config's errors name the config: a wrong type there ("add_bos_token": "yes") is not tokenizer.json's fault.
    const std::string dir = origin.substr(0, origin.find_last_of('/') + 1);
    try {
      apply_config(cfg);
    } catch (const json::exception& e) {
      throw FormatError(str(dir, "tokenizer_config.json (beside ", origin, "): malformed: ", e.what()));
    }
  }

  std::vector<int> encode(const std::string& text, bool add_special) const override {
    PATCHLLM_CHECK(utf8_valid(text), InvalidArgument, "tokenizer: input text is not valid UTF-8");
    std::vector<int> ids;
    if (add_special) ids = _prefix_ids;
    for (const Segment& seg : split_added(text, false, true)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      std::string norm = normalize(seg.text);
      for (const Segment& sub : split_added(norm, true, seg.at_start)) {
        if (sub.id >= 0) {
          ids.push_back(sub.id);
          continue;
        }
        for (const Piece& p : pre_tokenize(sub.text, sub.at_start)) bpe_word(p.text, ids);
      }
    }
    if (add_special) ids.insert(ids.end(), _suffix_ids.begin(), _suffix_ids.end());
    return ids;
  }

  std::string decode(const std::vector<int>& ids, bool skip_special) const override {
    std::vector<std::string> toks;
    toks.reserve(ids.size());
    for (int id : ids) {
      PATCHLLM_CHECK(id >= 0 && id < static_cast<int>(_id_to_token.size()), InvalidArgument, "tokenizer: id ", id,
                     " is outside the vocabulary of ", _origin, " (", _id_to_token.size(), " tokens)");
      if (skip_special && _is_special[id]) continue;
      toks.push_back(_id_to_token[id]);
    }
    if (_decoders.empty()) {  // tokenizers joins raw tokens with spaces when there is no decoder
      std::string out;
      for (size_t i = 0; i < toks.size(); ++i) out += (i ? " " : "") + toks[i];
      toks.assign(1, out);
    }
    for (const DecoderStep& d : _decoders) apply_decoder(d, toks);  // none: toks is already the joined text
    std::string out;
    for (auto& t : toks) out += t;
    if (_clean_up_spaces) {  // transformers' clean_up_tokenization, in its order
      static const char* const kCleanup[][2] = {{" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},
                                                {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},   {" 's", "'s"},
                                                {" 've", "'ve"}, {" 're", "'re"}};
      for (auto& r : kCleanup) replace_all(out, r[0], r[1]);
    }
    return out;
  }

  int vocab_size() const override { return static_cast<int>(_id_to_token.size()); }
  int bos_id() const override { return _bos; }
  int eos_id() const override { return _eos; }
  std::string token_text(int id) const override {
    PATCHLLM_CHECK(id >= 0 && id < vocab_size(), InvalidArgument, "tokenizer: id ", id, " is outside the vocabulary");
    return _id_to_token[id];
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw FormatError(str(_origin, ": ", what)); }

  // A token id: an integer in [0, 2^24). The bound (64x the largest real vocabularies) keeps the id -> token table,
  // sized by the largest id, from taking gigabytes for a malformed file. `key`: the vocab entry, for the message.
  int token_id(const json& v, const char* what, const std::string& key = "") const {
    int64_t id;
    if (!json_int_in(v, 0, (int64_t{1} << 24) - 1, &id))
      fail(str(what, key.empty() ? "" : " '" + key + "'", " is not an integer id in [0, 2^24): ", v.dump()));
    return static_cast<int>(id);
  }

  std::shared_ptr<Regex> pattern(const json& p, std::string& literal) {
    if (p.contains("Regex")) return std::make_shared<Regex>(p.at("Regex").get<std::string>(), _origin);
    if (p.contains("String")) {
      literal = p.at("String").get<std::string>();
      return nullptr;
    }
    fail("pattern must be {\"String\": ...} or {\"Regex\": ...}");
  }

  void parse_normalizer(const json& n) {
    if (n.is_null()) return;
    std::string type = n.at("type").get<std::string>();
    if (type == "Sequence") {
      for (const json& s : n.at("normalizers")) parse_normalizer(s);
    } else if (type == "Prepend") {
      _normalizers.emplace_back(NormalizerStep::PREPEND, n.at("prepend").get<std::string>());
    } else if (type == "Replace") {
      NormalizerStep s(NormalizerStep::REPLACE, "", n.at("content").get<std::string>());
      s.re = pattern(n.at("pattern"), s.a);
      _normalizers.push_back(s);
    } else if (type == "NFC") {
      _normalizers.emplace_back(NormalizerStep::NFC);
    } else if (type == "Strip") {
      NormalizerStep s(NormalizerStep::STRIP);
      s.left = n.value("strip_left", true);
      s.right = n.value("strip_right", true);
      _normalizers.push_back(s);
    } else {
      fail("unsupported normalizer type '" + type + "'");
    }
  }

  static SplitBehavior behavior_of(const std::string& b, const HfTokenizer& self) {
    if (b == "Removed") return SplitBehavior::REMOVED;
    if (b == "Isolated") return SplitBehavior::ISOLATED;
    if (b == "MergedWithPrevious") return SplitBehavior::MERGED_WITH_PREVIOUS;
    if (b == "MergedWithNext") return SplitBehavior::MERGED_WITH_NEXT;
    if (b == "Contiguous") return SplitBehavior::CONTIGUOUS;
    self.fail("unknown Split behavior '" + b + "'");
  }

  void parse_pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    std::string type = p.at("type").get<std::string>();
    if (type == "Sequence") {
      for (const json& s : p.at("pretokenizers")) parse_pre_tokenizer(s);
    } else if (type == "Split") {
      PreTokenizerStep s(PreTokenizerStep::SPLIT);
      s.re = pattern(p.at("pattern"), s.literal);
      s.behavior = behavior_of(p.at("behavior").get<std::string>(), *this);
      s.invert = p.value("invert", false);
      _pre.push_back(s);
    } else if (type == "ByteLevel") {
      PreTokenizerStep s(PreTokenizerStep::BYTE_LEVEL);
      if (p.value("use_regex", true)) s.re = std::make_shared<Regex>(kRegexGpt2, _origin);
      s.add_prefix_space = p.value("add_prefix_space", false);
      _pre.push_back(s);
    } else if (type == "Metaspace") {
      PreTokenizerStep s(PreTokenizerStep::METASPACE);
      s.replacement = p.value("replacement", std::string(kSpmSpace));
      std::string scheme = p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
      s.prepend = scheme == "first" ? PreTokenizerStep::FIRST
                  : scheme == "never" ? PreTokenizerStep::NEVER
                                      : PreTokenizerStep::ALWAYS;
      s.split = p.value("split", true);
      _pre.push_back(s);
    } else if (type == "Digits") {
      PreTokenizerStep s(PreTokenizerStep::SPLIT);
      s.re = std::make_shared<Regex>("\\p{N}", _origin);
      s.behavior = p.value("individual_digits", false) ? SplitBehavior::ISOLATED : SplitBehavior::CONTIGUOUS;
      _pre.push_back(s);
    } else {
      fail("unsupported pre_tokenizer type '" + type + "'");
    }
  }

  void parse_decoder(const json& d) {
    if (d.is_null()) return;
    std::string type = d.at("type").get<std::string>();
    if (type == "Sequence") {
      for (const json& s : d.at("decoders")) parse_decoder(s);
    } else if (type == "Replace") {
      DecoderStep s(DecoderStep::REPLACE);
      const json& pat = d.at("pattern");
      if (!pat.contains("String")) fail("decoder Replace supports String patterns only");
      s.a = pat.at("String").get<std::string>();
      s.b = d.at("content").get<std::string>();
      _decoders.push_back(s);
    } else if (type == "ByteFallback") {
      _decoders.emplace_back(DecoderStep::BYTE_FALLBACK);
    } else if (type == "Fuse") {
      _decoders.emplace_back(DecoderStep::FUSE);
    } else if (type == "Strip") {
      DecoderStep s(DecoderStep::STRIP);
      s.a = d.at("content").get<std::string>();
      s.start = d.value("start", 0);
      s.stop = d.value("stop", 0);
      _decoders.push_back(s);
    } else if (type == "ByteLevel") {
      _decoders.emplace_back(DecoderStep::BYTE_LEVEL);
    } else if (type == "Metaspace") {
      DecoderStep s(DecoderStep::METASPACE);
      s.a = d.value("replacement", std::string(kSpmSpace));
      std::string scheme = d.value("prepend_scheme", d.value("add_prefix_space", true) ? "always" : "never");
      s.prepend = scheme != "never";
      _decoders.push_back(s);
    } else {
      fail("unsupported decoder type '" + type + "'");
    }
  }

  void parse_model(const json& m) {
    std::string type = m.value("type", std::string("BPE"));
    if (type != "BPE") fail("unsupported model type '" + type + "' (only BPE)");
    if (!m.contains("vocab") || !m.at("vocab").is_object()) fail("model.vocab is missing or not an object");
    if (!m.contains("merges") || !m.at("merges").is_array()) fail("model.merges is missing or not an array");
    int max_id = -1;
    for (auto it = m.at("vocab").begin(); it != m.at("vocab").end(); ++it) {
      const int id = token_id(it.value(), "model.vocab entry", it.key());
      _vocab[it.key()] = id;
      max_id = std::max(max_id, id);
    }
    _id_to_token.assign(max_id + 1, "");
    for (auto& [tok, id] : _vocab) _id_to_token[id] = tok;
    _byte_fallback = m.value("byte_fallback", false);
    _fuse_unk = m.value("fuse_unk", false);
    _ignore_merges = m.value("ignore_merges", false);
    if (m.contains("unk_token") && m.at("unk_token").is_string()) {
      auto it = _vocab.find(m.at("unk_token").get<std::string>());
      if (it == _vocab.end()) fail("model.unk_token '" + m.at("unk_token").get<std::string>() + "' is not in vocab");
      _unk = it->second;
    }
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.contains(k) && m.at(k).is_string() && !m.at(k).get<std::string>().empty())
        fail(std::string("model.") + k + " is not supported");
    if (m.contains("dropout") && m.at("dropout").is_number() && m.at("dropout").get<double>() > 0)
      fail("model.dropout is not supported");
    if (_byte_fallback) {
      for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        auto it = _vocab.find(name);
        _byte_ids[b] = it == _vocab.end() ? -1 : it->second;
      }
    }
    int rank = 0;
    for (const json& mg : m.at("merges")) {
      std::string a, b;
      if (mg.is_string()) {  // "a b" (tokenizers < 0.20 spelling)
        std::string s = mg.get<std::string>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail("merge " + std::to_string(rank) + " '" + s + "' is not two space-separated tokens");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
        a = mg[0].get<std::string>();
        b = mg[1].get<std::string>();
      } else {
        fail("merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      auto ia = _vocab.find(a), ib = _vocab.find(b), iab = _vocab.find(a + b);
      if (ia == _vocab.end() || ib == _vocab.end() || iab == _vocab.end())
        fail("merge " + std::to_string(rank) + " ('" + a + "', '" + b + "') uses a token missing from vocab");
      _merges.emplace(pair_key(ia->second, ib->second), std::make_pair(rank, iab->second));
      ++rank;
    }
  }

  void parse_added(const json& list) {
    for (const json& t : list) {
      AddedToken a{token_id(t.at("id"), "added token id"), t.at("content").get<std::string>(),
                   t.value("single_word", false),             t.value("lstrip", false),
                   t.value("rstrip", false),                  t.value("normalized", true),
                   t.value("special", false)};
      if (a.content.empty()) fail("added token " + std::to_string(a.id) + " has empty content");
      if (a.id >= static_cast<int>(_id_to_token.size())) _id_to_token.resize(a.id + 1);
      _id_to_token[a.id] = a.content;
      _added.push_back(a);
    }
    _is_special.assign(_id_to_token.size(), 0);
    for (auto& a : _added) {
      _is_special[a.id] = a.special;
      _added_by_content[a.content] = a.id;
      // Normalized added tokens are matched on normalized text against their normalized content, as tokenizers does.
      if (a.normalized) a.content = normalize(a.content);
      (a.normalized ? _added_norm : _added_raw).push_back(a);
    }
    for (auto* v : {&_added_raw, &_added_norm})  // longest first: leftmost-longest matching
      std::stable_sort(v->begin(), v->end(),
                       [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
  }

  int lookup(const std::string& tok) const {
    auto it = _added_by_content.find(tok);
    if (it != _added_by_content.end()) return it->second;
    auto iv = _vocab.find(tok);
    return iv == _vocab.end() ? -1 : iv->second;
  }

  static std::string special_content(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content")) return v.at("content").get<std::string>();
    return "";
  }

  // Template (single sequence) -> ids before and after "A".
  void parse_post_processor(const json& p) {
    if (p.is_null()) return;
    std::string type = p.at("type").get<std::string>();
    if (type == "Sequence") {
      for (const json& s : p.at("processors")) parse_post_processor(s);
    } else if (type == "ByteLevel") {
      // offsets only
    } else if (type == "TemplateProcessing") {
      _prefix_ids.clear();
      _suffix_ids.clear();
      bool seen_a = false;
      for (const json& item : p.at("single")) {
        if (item.contains("Sequence")) {
          seen_a = true;
          continue;
        }
        if (!item.contains("SpecialToken")) fail("post_processor template item is neither SpecialToken nor Sequence");
        std::string name = item.at("SpecialToken").at("id").get<std::string>();
        const json& st = p.at("special_tokens");
        if (!st.contains(name)) fail("post_processor special token '" + name + "' is not in special_tokens");
        for (const json& id : st.at(name).at("ids"))
          (seen_a ? _suffix_ids : _prefix_ids).push_back(token_id(id, "post_processor id"));
      }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      _prefix_ids = {token_id(p.at("cls").at(1), "post_processor cls id")};
      _suffix_ids = {token_id(p.at("sep").at(1), "post_processor sep id")};
    } else {
      fail("unsupported post_processor type '" + type + "'");
    }
  }

  void parse(const json& tj) {
    if (!tj.is_object()) fail("tokenizer.json is not a JSON object");
    if (!tj.contains("model") || tj.at("model").is_null()) fail("tokenizer.json has no 'model'");
    parse_model(tj.at("model"));
    parse_normalizer(tj.value("normalizer", json()));
    parse_pre_tokenizer(tj.value("pre_tokenizer", json()));
    parse_decoder(tj.value("decoder", json()));
    parse_added(tj.value("added_tokens", json::array()));
    parse_post_processor(tj.value("post_processor", json()));
    for (int id : _prefix_ids)
      if (id < 0 || id >= vocab_size()) fail("post_processor id " + std::to_string(id) + " is outside the vocab");
    for (int id : _suffix_ids)
      if (id < 0 || id >= vocab_size()) fail("post_processor id " + std::to_string(id) + " is outside the vocab");
  }

  void apply_config(const json& cfg) {
    // transformers' LlamaTokenizerFast (and Gemma/CodeLlama) rebuild the template from tokenizer_config's
    // add_bos_token / add_eos_token; other classes keep tokenizer.json's post_processor.
    const json c = cfg.is_object() ? cfg : json::object();
    std::string cls = c.value("tokenizer_class", std::string());
    int bos = c.contains("bos_token") ? lookup(special_content(c.at("bos_token"))) : -1;
    int eos = c.contains("eos_token") ? lookup(special_content(c.at("eos_token"))) : -1;
    bool llama_like = cls.rfind("LlamaTokenizer", 0) == 0 || cls.rfind("CodeLlamaTokenizer", 0) == 0 ||
                      cls.rfind("GemmaTokenizer", 0) == 0;
    if (llama_like) {
      _prefix_ids.clear();
      _suffix_ids.clear();
      if (c.value("add_bos_token", true) && bos >= 0) _prefix_ids.push_back(bos);
      if (c.value("add_eos_token", false) && eos >= 0) _suffix_ids.push_back(eos);
    }
    // transformers applies clean_up_tokenization after decoding when the config asks (LLaMA-3's does); default off.
    _clean_up_spaces = c.value("clean_up_tokenization_spaces", false);
    _bos = bos >= 0 ? bos : (_prefix_ids.empty() ? -1 : _prefix_ids.front());
    _eos = eos >= 0 ? eos : (_suffix_ids.empty() ? -1 : _suffix_ids.back());
  }

  std::string normalize(const std::string& in) const {
    std::string s = in;
    for (const NormalizerStep& n : _normalizers) {
      switch (n.kind) {
        case NormalizerStep::PREPEND:
          if (!s.empty()) s = n.a + s;
          break;
        case NormalizerStep::REPLACE:
          if (n.re) {
            std::string out;
            size_t prev = 0;
            for (auto [b, e] : n.re->find_all(s)) {
              out.append(s, prev, b - prev);
              out += n.b;
              prev = e;
            }
            out.append(s, prev, std::string::npos);
            s.swap(out);
          } else {
            replace_all(s, n.a, n.b);
          }
          break;
        case NormalizerStep::STRIP: {
          size_t b = 0, e = s.size();
          if (n.left)
            while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
          if (n.right)
            while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
          s = s.substr(b, e - b);
          break;
        }
        case NormalizerStep::NFC:
          s = unicode_nfc(s);
          break;
      }
    }
    return s;
  }

  // AddedVocabulary::split_with_indices: leftmost-longest matches of added tokens, with single_word/lstrip/rstrip.
  std::vector<Segment> split_added(const std::string& text, bool normalized_set, bool at_start) const {
    const std::vector<AddedToken>& toks = normalized_set ? _added_norm : _added_raw;
    std::vector<Segment> out;
    if (toks.empty()) {
      if (!text.empty()) out.push_back({text, -1, at_start});
      return out;
    }
    size_t emitted = 0;  // text[0, emitted) is consumed
    size_t i = 0;
    while (i < text.size()) {
      const AddedToken* hit = nullptr;
      for (const AddedToken& t : toks)
        if (text.compare(i, t.content.size(), t.content) == 0) {
          hit = &t;
          break;
        }
      if (!hit) {
        ++i;
        continue;
      }
      size_t b = i, e = i + hit->content.size();
      if (hit->single_word) {
        bool ok = true;
        if (b > 0) {
          size_t k = b - 1;
          while (k > 0 && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) --k;
          size_t kk = k;
          ok = !is_word_char(utf8_next(text, kk));
        }
        if (ok && e < text.size()) {
          size_t kk = e;
          ok = !is_word_char(utf8_next(text, kk));
        }
        if (!ok) {
          i = e;  // aho-corasick resumes after the discarded match
          continue;
        }
      }
      if (hit->lstrip) {
        size_t k = b;
        while (k > emitted) {
          size_t p = k - 1;
          while (p > emitted && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
          size_t pp = p;
          if (!is_rust_whitespace(utf8_next(text, pp))) break;
          k = p;
        }
        b = k;
      }
      if (hit->rstrip) {
        while (e < text.size()) {
          size_t k = e;
          if (!is_rust_whitespace(utf8_next(text, k))) break;
          e = k;
        }
      }
      if (b > emitted) out.push_back({text.substr(emitted, b - emitted), -1, at_start && emitted == 0});
      out.push_back({"", hit->id, false});
      emitted = e;
      i = e;
    }
    if (emitted < text.size()) out.push_back({text.substr(emitted), -1, at_start && emitted == 0});
    return out;
  }

  std::vector<Piece> pre_tokenize(const std::string& text, bool at_start) const {
    std::vector<Piece> pieces{{text, at_start}};
    for (const PreTokenizerStep& st : _pre) {
      std::vector<Piece> next;
      for (Piece& p : pieces) {
        switch (st.kind) {
          case PreTokenizerStep::SPLIT: {
            auto spans = split_spans(p.text, st.re.get(), st.literal, st.behavior, st.invert);
            for (auto [b, e] : spans)
              if (e > b) next.push_back({p.text.substr(b, e - b), p.at_start && b == 0});
            break;
          }
          case PreTokenizerStep::BYTE_LEVEL: {
            // tokenizers: prefix space on each incoming piece, then the GPT-2 regex split, then the byte mapping
            std::string s = p.text;
            if (st.add_prefix_space && s.rfind(' ', 0) != 0) s = " " + s;
            std::vector<std::pair<size_t, size_t>> spans{{0, s.size()}};
            if (st.re) spans = split_spans(s, st.re.get(), "", SplitBehavior::ISOLATED, false);
            for (auto [b, e] : spans) {
              if (e <= b) continue;
              std::string mapped;
              mapped.reserve((e - b) * 2);
              for (size_t k = b; k < e; ++k) mapped += byte_map().byte_to_utf8[static_cast<unsigned char>(s[k])];
              next.push_back({mapped, p.at_start && b == 0});
            }
            break;
          }
          case PreTokenizerStep::METASPACE: {
            std::string s = p.text;
            replace_all(s, " ", st.replacement);
            bool starts = s.rfind(st.replacement, 0) == 0;
            if (!starts && (st.prepend == PreTokenizerStep::ALWAYS || (st.prepend == PreTokenizerStep::FIRST && p.at_start)))
              s = st.replacement + s;
            if (!st.split) {
              if (!s.empty()) next.push_back({s, p.at_start});
              break;
            }
            auto spans = split_spans(s, nullptr, st.replacement, SplitBehavior::MERGED_WITH_NEXT, false);
            for (auto [b, e] : spans)
              if (e > b) next.push_back({s.substr(b, e - b), p.at_start && b == 0});
            break;
          }
        }
      }
      pieces.swap(next);
    }
    return pieces;
  }

  static uint64_t pair_key(int a, int b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  // BPE of one pre-token (tokenizers' Word::merge_all: lowest merge rank first, leftmost on ties).
  void bpe_word(const std::string& w, std::vector<int>& out) const {
    if (_ignore_merges) {
      auto it = _vocab.find(w);
      if (it != _vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    {
      std::lock_guard<std::mutex> lock(_cache_mu);
      auto it = _cache.find(w);
      if (it != _cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    struct Sym {
      int id, prev, next;
      bool alive;
    };
    std::vector<Sym> syms;
    bool last_unk = false;
    for (size_t i = 0; i < w.size();) {
      size_t n = utf8_char_len(w, i);
      std::string ch = w.substr(i, n);
      i += n;
      auto it = _vocab.find(ch);
      if (it != _vocab.end()) {
        syms.push_back({it->second, 0, 0, true});
        last_unk = false;
        continue;
      }
      if (_byte_fallback) {
        bool all = true;
        for (unsigned char c : ch) all = all && _byte_ids[c] >= 0;
        if (all) {
          for (unsigned char c : ch) syms.push_back({_byte_ids[c], 0, 0, true});
          last_unk = false;
          continue;
        }
      }
      if (_unk >= 0) {
        if (!(_fuse_unk && last_unk)) syms.push_back({_unk, 0, 0, true});
        last_unk = true;
      }
    }
    const int n = static_cast<int>(syms.size());
    for (int i = 0; i < n; ++i) {
      syms[i].prev = i - 1;
      syms[i].next = i + 1 < n ? i + 1 : -1;
    }
    struct Cand {
      int rank, pos, new_id;
      bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand> q;
    auto push = [&](int pos) {
      int nx = syms[pos].next;
      if (nx < 0) return;
      auto it = _merges.find(pair_key(syms[pos].id, syms[nx].id));
      if (it != _merges.end()) q.push({it->second.first, pos, it->second.second});
    };
    for (int i = 0; i + 1 < n; ++i) push(i);
    while (!q.empty()) {
      Cand c = q.top();
      q.pop();
      Sym& s = syms[c.pos];
      if (!s.alive || s.next < 0) continue;
      auto it = _merges.find(pair_key(s.id, syms[s.next].id));
      if (it == _merges.end() || it->second.second != c.new_id) continue;  // stale entry
      Sym& r = syms[s.next];
      s.id = c.new_id;
      r.alive = false;
      s.next = r.next;
      if (s.next >= 0) syms[s.next].prev = c.pos;
      if (s.prev >= 0) push(s.prev);
      push(c.pos);
    }
    std::vector<int> ids;
    for (int i = n ? 0 : -1; i >= 0; i = syms[i].next) ids.push_back(syms[i].id);
    out.insert(out.end(), ids.begin(), ids.end());
    if (w.size() < 256) {
      std::lock_guard<std::mutex> lock(_cache_mu);
      if (_cache.size() > 200000) _cache.clear();  // bounded: a long-running server sees unbounded vocabularies
      _cache.emplace(w, std::move(ids));
    }
  }

  static void apply_decoder(const DecoderStep& d, std::vector<std::string>& toks) {
    switch (d.kind) {
      case DecoderStep::REPLACE:
        for (auto& t : toks) replace_all(t, d.a, d.b);
        break;
      case DecoderStep::BYTE_FALLBACK: {
        std::vector<std::string> out;
        std::string bytes;
        size_t nbytes = 0;
        auto flush = [&] {
          if (nbytes == 0) return;
          if (utf8_valid(bytes)) {
            out.push_back(bytes);
          } else {
            for (size_t k = 0; k < nbytes; ++k) out.push_back(kUtf8Replacement);
          }
          bytes.clear();
          nbytes = 0;
        };
        for (auto& t : toks) {
          unsigned v = 0;
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
              std::isxdigit(static_cast<unsigned char>(t[4])) && std::sscanf(t.c_str() + 3, "%2x", &v) == 1) {
            bytes += static_cast<char>(v);
            ++nbytes;
          } else {
            flush();
            out.push_back(t);
          }
        }
        flush();
        toks.swap(out);
        break;
      }
      case DecoderStep::FUSE: {
        std::string all;
        for (auto& t : toks) all += t;
        toks.assign(1, all);
        break;
      }
      case DecoderStep::STRIP:
        for (auto& t : toks) {
          size_t b = 0, e = t.size();
          for (int k = 0; k < d.start && t.compare(b, d.a.size(), d.a) == 0 && b < e; ++k) b += d.a.size();
          for (int k = 0; k < d.stop && e >= b + d.a.size() && t.compare(e - d.a.size(), d.a.size(), d.a) == 0; ++k)
            e -= d.a.size();
          t = t.substr(b, e - b);
        }
        break;
      case DecoderStep::BYTE_LEVEL: {
        std::string bytes;
        for (auto& t : toks) {
          std::string tb;
          bool ok = true;
          for (size_t i = 0; i < t.size() && ok;) {
            uint32_t cp = utf8_next(t, i);
            auto it = byte_map().cp_to_byte.find(cp);
            if (it == byte_map().cp_to_byte.end())
              ok = false;
            else
              tb += static_cast<char>(it->second);
          }
          bytes += ok ? tb : t;  // tokens outside the byte alphabet (added tokens) pass through as text
        }
        toks.assign(1, utf8_lossy(bytes));
        break;
      }
      case DecoderStep::METASPACE:
        for (size_t i = 0; i < toks.size(); ++i) {
          std::string out;
          const std::string& t = toks[i];
          for (size_t k = 0; k < t.size();) {
            if (t.compare(k, d.a.size(), d.a) == 0) {
              if (!(i == 0 && d.prepend)) out += ' ';
              k += d.a.size();
            } else {
              out += t[k++];
            }
          }
          toks[i] = out;
        }
        break;
    }
  }

  std::string _origin;
  std::unordered_map<std::string, int> _vocab;
  std::vector<std::string> _id_to_token;
  std::vector<char> _is_special;
  std::unordered_map<uint64_t, std::pair<int, int>> _merges;  // (left id, right id) -> (rank, merged id)
  int _byte_ids[256] = {};
  int _unk = -1;
  bool _byte_fallback = false, _fuse_unk = false, _ignore_merges = false;
  std::vector<NormalizerStep> _normalizers;
  std::vector<PreTokenizerStep> _pre;
  std::vector<DecoderStep> _decoders;
  std::vector<AddedToken> _added, _added_raw, _added_norm;
  std::unordered_map<std::string, int> _added_by_content;
  std::vector<int> _prefix_ids, _suffix_ids;
  int _bos = -1, _eos = -1;
  bool _clean_up_spaces = false;
  mutable std::mutex _cache_mu;
  mutable std::unordered_map<std::string, std::vector<int>> _cache;
};

}  // namespace

TokenizerPtr tokenizer_from_json(const json& tokenizer_json, const json& tokenizer_config, const std::string& origin) {
  return std::make_unique<HfTokenizer>(tokenizer_json, tokenizer_config, origin);
}

}  // namespace patchllm
