// Tokenizers against HF golden ids (tools/gen_tokenizer_golden.py): byte-level BPE trained with LLaMA-3's and Qwen2's
// pre-tokenizers, llama2.c tok512 (reference: a port of run.c encode), builders, streaming decode, error paths.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "core/file.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace patchllm {
namespace {

using json = nlohmann::json;

std::string data_dir() { return test::source_dir() + "/tests/data/tokenizer"; }
json load_json(const std::string& path) { return json::parse(file_read(path)); }

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

void expect_golden(const Tokenizer& tok, const json& g, bool check_no_special) {
  const auto& texts = g.at("texts");
  for (size_t i = 0; i < texts.size(); ++i) {
    std::string t = texts[i].get<std::string>();
    SCOPED_TRACE("text " + std::to_string(i) + ": " + t);
    auto ids = tok.encode(t);
    EXPECT_EQ(ids, g.at("ids")[i].get<std::vector<int>>());
    if (check_no_special) EXPECT_EQ(tok.encode(t, false), g.at("ids_no_special")[i].get<std::vector<int>>());
    EXPECT_EQ(tok.decode(ids), g.at("decode")[i].get<std::string>());
    EXPECT_EQ(tok.decode(ids, false), g.at("decode_keep_special")[i].get<std::string>());
  }
}

class ByteLevel : public ::testing::TestWithParam<std::string> {};

TEST_P(ByteLevel, MatchesHfGoldenIdsAndDecode) {
  std::string dir = data_dir() + "/bytelevel_" + GetParam();
  json g = load_json(dir + "/golden.json");
  auto tok = tokenizer_load(dir);
  EXPECT_EQ(tok->vocab_size(), g.at("vocab_size").get<int>());
  EXPECT_EQ(tok->bos_id(), g.at("bos_id").is_null() ? -1 : g.at("bos_id").get<int>());
  EXPECT_EQ(tok->eos_id(), g.at("eos_id").is_null() ? -1 : g.at("eos_id").get<int>());
  expect_golden(*tok, g, true);
  // A single byte of a 3-byte character decodes lossily, as HF's ByteLevel decoder does.
  EXPECT_EQ(tok->decode(g.at("decode_partial").at("ids").get<std::vector<int>>()),
            g.at("decode_partial").at("text").get<std::string>());
}

TEST_P(ByteLevel, RoundTripsEveryText) {
  auto tok = tokenizer_load_file(data_dir() + "/bytelevel_" + GetParam() + "/tokenizer.json");
  for (const auto& t : load_json(data_dir() + "/texts.json")) {
    std::string s = t.get<std::string>();
    EXPECT_EQ(tok->decode(tok->encode(s, false)), s);
    EXPECT_EQ(tok->decode(tok->encode(s, true)), s);  // BOS is special: skipped
  }
}

TEST_P(ByteLevel, MergesAsStringsGiveSameIds) {
  std::string dir = data_dir() + "/bytelevel_" + GetParam();
  json tj = load_json(dir + "/tokenizer.json");
  json strings = json::array();
  for (const auto& m : tj["model"]["merges"]) strings.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  tj["model"]["merges"] = strings;
  auto tok = tokenizer_from_json(tj, load_json(dir + "/tokenizer_config.json"), dir + "/tokenizer.json");
  expect_golden(*tok, load_json(dir + "/golden.json"), true);
}

// GGUF-style inputs (token list, "a b" merges, token types) -> tokenizer_json_from_bpe -> same ids as HF.
TEST_P(ByteLevel, BuilderFromVocabAndMergesMatchesHf) {
  std::string dir = data_dir() + "/bytelevel_" + GetParam();
  json tj = load_json(dir + "/tokenizer.json"), g = load_json(dir + "/golden.json");
  std::vector<std::string> tokens(g.at("vocab_size").get<int>());
  std::vector<int> types(tokens.size(), TOKEN_TYPE_NORMAL);
  for (auto it = tj["model"]["vocab"].begin(); it != tj["model"]["vocab"].end(); ++it) tokens[it.value()] = it.key();
  for (const auto& a : tj["added_tokens"]) {
    tokens[a["id"].get<int>()] = a["content"];
    types[a["id"].get<int>()] = a["special"].get<bool>() ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_USER_DEFINED;
  }
  std::vector<std::string> merges;
  for (const auto& m : tj["model"]["merges"]) merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  TokenizerSpecials sp;
  sp.bos_id = g["bos_id"].is_null() ? -1 : g["bos_id"].get<int>();
  sp.eos_id = g["eos_id"].get<int>();
  sp.add_bos = sp.bos_id >= 0;
  auto tok = tokenizer_from_json(tokenizer_json_from_bpe(tokens, merges, types, GetParam(), sp), json(), "built");
  // Texts without the added tokens whose lstrip/rstrip/single_word flags GGUF cannot express.
  size_t n = load_json(data_dir() + "/texts.json").size() + 2;
  for (size_t i = 0; i < n; ++i) {
    std::string t = g["texts"][i];
    EXPECT_EQ(tok->encode(t), g["ids"][i].get<std::vector<int>>()) << t;
    EXPECT_EQ(tok->decode(g["ids"][i].get<std::vector<int>>()), g["decode"][i].get<std::string>()) << t;
  }
  EXPECT_EQ(tok->bos_id(), sp.bos_id);
  EXPECT_THROW(tokenizer_json_from_bpe(tokens, merges, types, "gpt4", sp), InvalidArgument);
}

// Other HF components on the trained LLaMA-3-style vocabulary: GPT-2 ByteLevel regex with add_prefix_space, Digits,
// every Split behaviour and invert, Replace (string and regex) and Strip normalizers, no decoder.
TEST(Tokenizer, ComponentVariantsMatchHf) {
  std::string dir = data_dir() + "/bytelevel_llama3";
  json g = load_json(dir + "/golden.json");
  json texts = load_json(data_dir() + "/texts.json");
  ASSERT_EQ(g["variants"].size(), 6u);
  for (const auto& v : g["variants"]) {
    json tj = load_json(dir + "/tokenizer.json");
    for (auto it = v["edit"].begin(); it != v["edit"].end(); ++it) tj[it.key()] = it.value();
    auto tok = tokenizer_from_json(tj, json(), "variant");
    for (size_t i = 0; i < texts.size(); ++i) {
      SCOPED_TRACE(v["edit"].dump() + " / " + texts[i].get<std::string>());
      auto ids = tok->encode(texts[i]);
      EXPECT_EQ(ids, v["ids"][i].get<std::vector<int>>());
      EXPECT_EQ(tok->decode(ids), v["decode"][i].get<std::string>());
    }
  }
}

// Decomposed (NFD) input: Qwen2's NFC normalizer recomposes it before the regex, LLaMA-3 has none; both as HF.
TEST_P(ByteLevel, DecomposedTextMatchesHf) {
  json g = load_json(data_dir() + "/bytelevel_" + GetParam() + "/golden.json");
  auto tok = tokenizer_load(data_dir() + "/bytelevel_" + GetParam());
  ASSERT_FALSE(g["nfd_texts"].empty());
  for (size_t i = 0; i < g["nfd_texts"].size(); ++i)
    EXPECT_EQ(tok->encode(g["nfd_texts"][i]), g["nfd_ids"][i].get<std::vector<int>>()) << g["nfd_texts"][i];
}

// 1.3 MB of real text: the PCRE2 pre-tokenizer must split exactly as HF's Oniguruma does, and BPE must be fast.
TEST_P(ByteLevel, WikitextTestMatchesHfAndIsFast) {
  PATCHLLM_REQUIRE_SHARED(wiki, "data/wikitext-2-raw/wiki.test.raw");
  json g = load_json(data_dir() + "/bytelevel_" + GetParam() + "/golden.json")["wiki_test"];
  std::string text = file_read(wiki);
  auto tok = tokenizer_load(data_dir() + "/bytelevel_" + GetParam());
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok->encode(text);
  double enc_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids.size(), g["n_ids"].get<size_t>());
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + 64), g["head"].get<std::vector<int>>());
  std::vector<uint8_t> le(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i)
    for (int b = 0; b < 4; ++b) le[4 * i + b] = static_cast<uint8_t>(static_cast<uint32_t>(ids[i]) >> (8 * b));
  EXPECT_EQ(sha256_hex(le.data(), le.size()), g["sha256_ids_le32"].get<std::string>());
  // bytelevel_llama3's tokenizer_config sets clean_up_tokenization_spaces (as Meta's does): transformers then
  // rewrites " ," -> "," etc. after decoding, which wikitext's spaced punctuation exercises.
  std::string expect = text;
  if (load_json(data_dir() + "/bytelevel_" + GetParam() + "/tokenizer_config.json").value("clean_up_tokenization_spaces", false))
    for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
             {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
             {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
      for (size_t p = 0; (p = expect.find(from, p)) != std::string::npos;) expect.replace(p, from.size(), to), p += to.size();
  t0 = std::chrono::steady_clock::now();
  std::string back = tok->decode(ids);
  double dec_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(back == expect) << "decode of wiki.test.raw differs";
  std::printf("%s wiki.test.raw (%zu bytes, %zu ids): encode %.3f s, decode %.3f s\n", GetParam().c_str(), text.size(),
              ids.size(), enc_s, dec_s);
  EXPECT_LT(enc_s, 10.0);
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, ByteLevel, ::testing::Values("llama3", "qwen2"));

TEST(Tokenizer, AddedTokenFlagsFollowHf) {
  // Hand-checked consequences of the flags in bytelevel_llama3 (ids from its tokenizer.json).
  auto tok = tokenizer_load(data_dir() + "/bytelevel_llama3");
  // <|mask|> (676) has lstrip+rstrip: the spaces around it are swallowed, so "x <|mask|>  y" == "x<|mask|>y".
  EXPECT_EQ(tok->encode("x <|mask|>  y", false), tok->encode("x<|mask|>y", false));
  EXPECT_EQ(tok->encode("x<|mask|>y", false)[1], 676);
  // "dog" (678) is single_word: matched alone, not inside "hotdog".
  auto in_word = tok->encode("hotdog", false), alone = tok->encode("dog", false);
  EXPECT_EQ(alone, std::vector<int>{678});
  EXPECT_EQ(std::count(in_word.begin(), in_word.end(), 678), 0);
  // Special tokens in text are matched even with add_special=false, and skipped by decode(skip_special).
  auto ids = tok->encode("<|end_of_text|>", false);
  EXPECT_EQ(ids, std::vector<int>{1});
  EXPECT_EQ(tok->decode(ids), "");
  EXPECT_EQ(tok->decode(ids, false), "<|end_of_text|>");
  // "hello world" is a non-special added token: kept by decode(skip_special).
  EXPECT_EQ(tok->decode(tok->encode("hello world", false)), "hello world");
  EXPECT_EQ(tok->encode("hello world", false), std::vector<int>{677});
}

// unicode_nfc against HF's NFC normalizer: tricky cases (reordering, blocking, exclusions, singletons, Hangul) and
// a sweep over every code point with a canonical decomposition, decomposed and then recomposed.
TEST(Tokenizer, NfcMatchesHfNormalizer) {
  json g = load_json(data_dir() + "/nfc_golden.json");
  for (size_t i = 0; i < g["input"].size(); ++i) {
    std::string in = g["input"][i], want = g["hf_nfc"][i];
    std::string got = unicode_nfc(in);
    if (got == want) continue;
    size_t k = 0;
    while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
    ADD_FAILURE() << "case " << i << " differs at byte " << k << ": got '" << got.substr(k, 24) << "' want '"
                  << want.substr(k, 24) << "'";
  }
  EXPECT_EQ(unicode_nfc("plain ASCII"), "plain ASCII");
}

// Hand-computed BPE model options on a toy vocabulary.
json toy_bpe(bool ignore_merges, bool fuse_unk, bool byte_fallback) {
  json vocab = {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"c", 3}, {"bc", 4}, {"abc", 5}, {"<0xC3>", 6}, {"<0xA9>", 7}};
  return {{"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"b c"})}, {"unk_token", "<unk>"},
            {"fuse_unk", fuse_unk}, {"byte_fallback", byte_fallback}, {"ignore_merges", ignore_merges}}},
          {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}}};
}

TEST(Tokenizer, BpeModelOptionsHandComputed) {
  // "abc" is in the vocabulary but unreachable by merges ("a"+"bc" is no merge): only ignore_merges takes it whole.
  EXPECT_EQ(tokenizer_from_json(toy_bpe(false, false, false), json(), "toy")->encode("abc"), (std::vector<int>{1, 4}));
  EXPECT_EQ(tokenizer_from_json(toy_bpe(true, false, false), json(), "toy")->encode("abc"), (std::vector<int>{5}));
  // Unknown characters: one <unk> each, or one per run with fuse_unk.
  EXPECT_EQ(tokenizer_from_json(toy_bpe(false, false, false), json(), "toy")->encode("axyb"),
            (std::vector<int>{1, 0, 0, 2}));
  EXPECT_EQ(tokenizer_from_json(toy_bpe(false, true, false), json(), "toy")->encode("axyb"), (std::vector<int>{1, 0, 2}));
  // byte_fallback: "é" = C3 A9 has both byte pieces; "ü" = C3 BC lacks <0xBC>, so it is <unk>.
  auto bf = tokenizer_from_json(toy_bpe(false, true, true), json(), "toy");
  EXPECT_EQ(bf->encode("a\xC3\xA9"), (std::vector<int>{1, 6, 7}));
  EXPECT_EQ(bf->encode("\xC3\xBC"), (std::vector<int>{0}));
  EXPECT_EQ(bf->decode({1, 6, 7, 2}), "a\xC3\xA9" "b");
  EXPECT_EQ(bf->decode({6, 2}), "\xEF\xBF\xBD" "b");  // lone lead byte: U+FFFD, as ByteFallback does
  EXPECT_EQ(bf->bos_id(), -1);
  EXPECT_EQ(bf->eos_id(), -1);
}

// ------------------------------------------------------------------------------------------------ llama2.c tok512
TEST(Tokenizer, Llama2cMatchesRunCEncode) {
  PATCHLLM_REQUIRE_SHARED(bin, "models/stories260K/tok512.bin");
  json g = load_json(data_dir() + "/llama2c_golden.json");
  ASSERT_TRUE(g["hf_converted_mismatches"].empty());  // the Python cross-check agreed when goldens were made
  auto tok = tokenizer_load_file(bin);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->token_text(403), "\xE2\x96\x81Once");
  EXPECT_EQ(tok->encode("Once"), (std::vector<int>{1, 403}));
  EXPECT_EQ(tok->decode({1, 403}), "Once");
  for (size_t i = 0; i < g["texts"].size(); ++i) {
    std::string t = g["texts"][i];
    auto ids = tok->encode(t);
    EXPECT_EQ(ids, g["ids"][i].get<std::vector<int>>()) << t;
    EXPECT_EQ(tok->decode(ids), g["decode"][i].get<std::string>()) << t;
    // SentencePiece-style round trip is exact: Strip removes only the '▁' that the Prepend normalizer added.
    EXPECT_EQ(tok->decode(ids), t) << t;
  }
}

TEST(Tokenizer, Llama2cConversionDocument) {
  PATCHLLM_REQUIRE_SHARED(bin, "models/stories260K/tok512.bin");
  json g = load_json(data_dir() + "/llama2c_golden.json");
  json tj = tokenizer_json_from_llama2c(bin);
  ASSERT_EQ(tj["model"]["merges"].size(), g["n_merges"].get<size_t>());
  for (size_t i = 0; i < g["merges_head"].size(); ++i) EXPECT_EQ(tj["model"]["merges"][i], g["merges_head"][i]) << i;
  EXPECT_EQ(tj["model"]["vocab"]["<s>"], 1);
  EXPECT_EQ(tj["model"]["vocab"]["<0x0A>"], 13);
  EXPECT_TRUE(tj["model"]["byte_fallback"].get<bool>());
  EXPECT_EQ(tj["added_tokens"].size(), 3u);
  json cfg = tokenizer_config_from_llama2c(bin);
  EXPECT_TRUE(cfg["add_bos_token"].get<bool>());
  EXPECT_FALSE(cfg["add_eos_token"].get<bool>());
  EXPECT_EQ(cfg["bos_token"], "<s>");
  EXPECT_EQ(cfg["eos_token"], "</s>");
  // With add_eos the template appends </s>.
  TokenizerSpecials sp;
  sp.bos_id = 1, sp.eos_id = 2, sp.unk_id = 0, sp.add_bos = true, sp.add_eos = true;
  json v = tj["model"]["vocab"];
  std::vector<std::string> pieces(512);
  for (auto it = v.begin(); it != v.end(); ++it) pieces[it.value()] = it.key();
  std::vector<float> scores(512, 0.f);
  for (int i = 0; i < 512; ++i) scores[i] = -static_cast<float>(i);
  std::vector<int> types(512, TOKEN_TYPE_NORMAL);
  types[0] = TOKEN_TYPE_UNKNOWN, types[1] = types[2] = TOKEN_TYPE_CONTROL;
  auto tok = tokenizer_from_json(tokenizer_json_from_spm_pieces(pieces, scores, types, sp), json(), "built");
  auto ids = tok->encode("Once");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
}

// ------------------------------------------------------------------------------------------------ streaming
TEST(Tokenizer, StreamDecoderNeverSplitsACodePoint) {
  std::vector<TokenizerPtr> toks;
  toks.push_back(tokenizer_load(data_dir() + "/bytelevel_llama3"));
  toks.push_back(tokenizer_load(data_dir() + "/bytelevel_qwen2"));
  std::string shared = test::shared_dir();
  if (!shared.empty()) toks.push_back(tokenizer_load_file(shared + "/models/stories260K/tok512.bin"));
  for (auto& tok : toks) {
    for (const auto& t : load_json(data_dir() + "/texts.json")) {
      auto ids = tok->encode(t.get<std::string>());
      StreamDecoder sd(*tok);
      std::string acc;
      for (int id : ids) {
        std::string piece = sd.push(id);
        EXPECT_TRUE(valid_utf8(piece)) << t;
        EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << t;
        acc += piece;
      }
      acc += sd.flush();
      EXPECT_EQ(acc, tok->decode(ids)) << t;
    }
  }
  // Byte-level: the first token of a split multi-byte character yields nothing until the character completes.
  auto& tok = *toks[0];
  json g = load_json(data_dir() + "/bytelevel_llama3/golden.json");
  StreamDecoder sd(tok);
  EXPECT_EQ(sd.push(g["decode_partial"]["ids"][0].get<int>()), "");
  EXPECT_EQ(sd.flush(), "\xEF\xBF\xBD");
}

// Stop strings: the streamed pieces concatenate to the text cut before the first occurrence of the stop string (taken
// at many offsets of each text, so many span several tokens), and a stop string that never occurs changes nothing.
TEST(Tokenizer, StopStringDecoderCutsBeforeTheFirstStop) {
  std::vector<TokenizerPtr> toks;
  toks.push_back(tokenizer_load(data_dir() + "/bytelevel_llama3"));
  toks.push_back(tokenizer_load(data_dir() + "/bytelevel_qwen2"));
  int spanning = 0;
  for (auto& tok : toks) {
    for (const auto& t : load_json(data_dir() + "/texts.json")) {
      auto ids = tok->encode(t.get<std::string>());
      const std::string full = tok->decode(ids);
      auto run = [&](const std::vector<std::string>& stops, bool& stopped) {
        StopStringDecoder sd(*tok, stops);
        std::string acc;
        for (int id : ids) acc += sd.push(id);
        acc += sd.flush();
        stopped = sd.stopped();
        return acc;
      };
      bool stopped = true;
      EXPECT_EQ(run({"\x01never\x02"}, stopped), full);
      EXPECT_FALSE(stopped);
      for (size_t at = 0; at + 4 <= full.size(); at += 5) {
        const std::string stop = full.substr(at, 4);
        const size_t first = full.find(stop);
        EXPECT_EQ(run({"\x01never\x02", stop}, stopped), full.substr(0, first)) << stop;
        EXPECT_TRUE(stopped);
        // How many of them span a token boundary: some prefix of the ids decodes to text ending inside the stop.
        for (size_t n = 1; n < ids.size(); ++n) {
          const size_t len = tok->decode(std::vector<int>(ids.begin(), ids.begin() + n)).size();
          if (len > first && len < first + stop.size()) {
            ++spanning;
            break;
          }
        }
      }
    }
  }
  EXPECT_GT(spanning, 20);
  EXPECT_THROW(StopStringDecoder(*toks[0], {"x", ""}), InvalidArgument);
}

// ------------------------------------------------------------------------------------------------ errors
std::string write_temp(const std::string& name, const std::string& content) {
  std::string dir = test::temp_dir("tok");
  std::string path = dir + "/" + name;
  std::ofstream(path) << content;
  return path;
}

void expect_format_error(const std::string& path, const std::string& needle) {
  try {
    tokenizer_load_file(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const FormatError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(needle), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(Tokenizer, MalformedFilesGiveOneLineFormatErrors) {
  json good = load_json(data_dir() + "/bytelevel_qwen2/tokenizer.json");
  json j = good;
  j.erase("model");
  expect_format_error(write_temp("tokenizer.json", j.dump()), "no 'model'");
  j = good;
  j["model"]["merges"].push_back({"zz_not_in_vocab", "a"});
  expect_format_error(write_temp("tokenizer.json", j.dump()), "missing from vocab");
  j = good;
  j["model"]["merges"][0] = "a b c";
  expect_format_error(write_temp("tokenizer.json", j.dump()), "merge 0");
  j = good;
  j["model"]["type"] = "WordPiece";
  expect_format_error(write_temp("tokenizer.json", j.dump()), "unsupported model type 'WordPiece'");
  j = good;
  j["normalizer"] = {{"type", "Bogus"}};
  expect_format_error(write_temp("tokenizer.json", j.dump()), "unsupported normalizer type 'Bogus'");
  j = good;
  j["decoder"] = {{"type", "Wordpiece"}};
  expect_format_error(write_temp("tokenizer.json", j.dump()), "unsupported decoder type");
  j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  expect_format_error(write_temp("tokenizer.json", j.dump()), "PCRE2");
  j = good;
  j["model"]["vocab"] = 3;
  expect_format_error(write_temp("tokenizer.json", j.dump()), "model.vocab");
  // Found by fuzz/fuzz_tokenizer_json: a float id converted to int with undefined behaviour, and a huge id sized the
  // id -> token table (2^31 strings) before anything else was checked.
  for (const json& bad_id : {json(1.6e22), json(2000000000), json(-1), json("7")}) {
    j = good;
    j["model"]["vocab"]["!"] = bad_id;
    expect_format_error(write_temp("tokenizer.json", j.dump()), "model.vocab entry '!' is not an integer id");
  }
  j = good;
  j["added_tokens"][0]["id"] = 0.5;
  expect_format_error(write_temp("tokenizer.json", j.dump()), "added token id is not an integer id");
  expect_format_error(write_temp("tokenizer.json", "{\"model\": "), "malformed JSON");
  // A wrong type in tokenizer_config.json is that file's error, not tokenizer.json's.
  {
    const std::string dir = test::temp_dir("tok-config");
    std::ofstream(dir + "/tokenizer.json") << good.dump();
    for (const char* cfg : {R"({"add_bos_token": "yes", "tokenizer_class": "LlamaTokenizerFast"})",
                            R"({"clean_up_tokenization_spaces": 1})", R"({"bos_token": {"content": 7}})"}) {
      std::ofstream(dir + "/tokenizer_config.json") << cfg;
      try {
        tokenizer_load(dir);
        ADD_FAILURE() << "no error for " << cfg;
      } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find(dir + "/tokenizer_config.json (beside"), std::string::npos) << e.what();
      }
    }
  }
  expect_format_error(write_temp("tok.bin", std::string("\x07\x00\x00\x00\x00\x00\x80\x3f\x09", 9)), "truncated");
  expect_format_error("/nonexistent/dir/tokenizer.json", "no such file");
  std::string empty = test::temp_dir("tok-empty");
  EXPECT_THROW(tokenizer_load(empty), FormatError);
  EXPECT_THROW(tokenizer_load("/nonexistent/model-dir"), FormatError);
}

TEST(Tokenizer, RejectsBadInput) {
  auto tok = tokenizer_load(data_dir() + "/bytelevel_qwen2");
  EXPECT_THROW(tok->encode(std::string("ab\xC3", 3)), InvalidArgument);
  EXPECT_THROW(tok->decode({tok->vocab_size()}), InvalidArgument);
  EXPECT_THROW(tok->decode({-1}), InvalidArgument);
}

}  // namespace
}  // namespace patchllm
