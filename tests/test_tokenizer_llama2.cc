// LLaMA-2 SentencePiece-style tokenizer: the tokenizer.json that tokenizer_json_from_spm_pieces builds from
// shared/models/llama2-tokenizer/tokenizer.model must give HF LlamaTokenizerFast's ids (golden from
// tools/gen_tokenizer_golden.py; the converted json itself is not committed), and libsentencepiece must agree.
#include <gtest/gtest.h>
#ifdef PATCHLLM_HAVE_SPM_REFERENCE
#include <sentencepiece_processor.h>
#endif

#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "test_util.h"
#include "tokenizer/spm_model.h"
#include "tokenizer/tokenizer.h"

namespace patchllm {
#ifdef PATCHLLM_HAVE_SPM_REFERENCE
TokenizerPtr tokenizer_load_libsentencepiece(const std::string& path);  // spm_tokenizer.cc, compiled into the test
#endif
namespace {

using json = nlohmann::json;

json golden() { return json::parse(file_read(test::source_dir() + "/tests/data/tokenizer/llama2_golden.json")); }

struct Built {
  json tj, cfg;
};

Built build_from_model(const std::string& model) {
  SpmModel m = spm_model_read(model);
  TokenizerSpecials s;
  s.unk_id = m.unk_id, s.bos_id = m.bos_id, s.eos_id = m.eos_id, s.add_bos = true, s.add_eos = false;
  return {tokenizer_json_from_spm_pieces(m.pieces, m.scores, m.types, s), tokenizer_config_from_spm_pieces(m.pieces, s)};
}

std::string ids_digest(const std::vector<int>& ids) {
  std::vector<uint8_t> le(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    uint32_t v = static_cast<uint32_t>(ids[i]);
    for (int b = 0; b < 4; ++b) le[4 * i + b] = static_cast<uint8_t>(v >> (8 * b));
  }
  return sha256_hex(le.data(), le.size());
}

TEST(TokenizerLlama2, MergesMatchTransformersConverter) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  json g = golden();
  Built b = build_from_model(model);
  const json& merges = b.tj["model"]["merges"];
  ASSERT_EQ(merges.size(), g["legacy_merges_count"].get<size_t>());
  for (size_t i = 0; i < g["legacy_merges_head"].size(); ++i) EXPECT_EQ(merges[i], g["legacy_merges_head"][i]) << i;
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i)
    joined += (i ? "\n" : "") + merges[i][0].get<std::string>() + " " + merges[i][1].get<std::string>();
  EXPECT_EQ(sha256_hex(joined.data(), joined.size()), g["legacy_merges_digest"].get<std::string>());
}

TEST(TokenizerLlama2, ConvertedJsonMatchesHfIds) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  json g = golden();
  Built b = build_from_model(model);
  auto tok = tokenizer_from_json(b.tj, b.cfg, "llama2 (built)");
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  for (size_t i = 0; i < g["texts"].size(); ++i) {
    std::string t = g["texts"][i];
    auto ids = tok->encode(t);
    EXPECT_EQ(ids, g["hf_legacy"][i].get<std::vector<int>>()) << i << ": " << t;
    EXPECT_EQ(tok->decode(ids), g["decode"][i].get<std::string>()) << t;
    EXPECT_EQ(tok->decode(ids, false), g["decode_keep_special"][i].get<std::string>()) << t;
    if (t.find('<') == std::string::npos) EXPECT_EQ(tok->decode(ids), t) << "round trip: " << t;
  }
  // Without add_bos_token the LlamaTokenizerFast template adds nothing; with add_eos_token it appends </s>.
  json cfg = b.cfg;
  cfg["add_bos_token"] = false;
  cfg["add_eos_token"] = true;
  auto tok2 = tokenizer_from_json(b.tj, cfg, "llama2 (built)");
  auto ids = tok2->encode("Hello world");
  EXPECT_EQ(ids, (std::vector<int>{15043, 3186, 2}));
}

TEST(TokenizerLlama2, MetaspaceVariantMatchesHfIds) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  json g = golden();
  Built b = build_from_model(model);
  // transformers' non-legacy conversion: no normalizer, Metaspace(prepend_scheme="first", split=false).
  b.tj["normalizer"] = g["metaspace_normalizer"];
  b.tj["pre_tokenizer"] = g["metaspace_pre_tokenizer"];
  auto tok = tokenizer_from_json(b.tj, b.cfg, "llama2 metaspace (built)");
  for (size_t i = 0; i < g["texts"].size(); ++i) {
    std::string t = g["texts"][i];
    EXPECT_EQ(tok->encode(t), g["hf_metaspace"][i].get<std::vector<int>>()) << i << ": " << t;
  }
}

// The older Metaspace spelling (split on '▁', prepend "always", Metaspace decoder) and prepend "never".
TEST(TokenizerLlama2, MetaspaceSplitVariantsMatchHf) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  json g = golden();
  Built b = build_from_model(model);
  json texts = json::parse(file_read(test::source_dir() + "/tests/data/tokenizer/texts.json"));
  ASSERT_EQ(g["variants"].size(), 2u);
  for (const auto& v : g["variants"]) {
    json tj = b.tj;
    for (auto it = v["edit"].begin(); it != v["edit"].end(); ++it) tj[it.key()] = it.value();
    auto tok = tokenizer_from_json(tj, b.cfg, "variant");
    for (size_t i = 0; i < texts.size(); ++i) {
      SCOPED_TRACE(v["edit"].dump() + " / " + texts[i].get<std::string>());
      auto ids = tok->encode(texts[i]);
      EXPECT_EQ(ids, v["ids"][i].get<std::vector<int>>());
      EXPECT_EQ(tok->decode(ids), v["decode"][i].get<std::string>());
    }
  }
}

// tokenizer.model loaded by the library (its own protobuf reader + the converter above), by file and by directory.
TEST(TokenizerLlama2, ModelFileLoadsAsHfDoes) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  json g = golden();
  auto tok = tokenizer_load_file(model);
  auto from_dir = tokenizer_load(model.substr(0, model.find_last_of('/')));  // no tokenizer.json there
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  for (size_t i = 0; i < g["texts"].size(); ++i) {
    std::string t = g["texts"][i];
    auto ids = tok->encode(t);
    EXPECT_EQ(ids, g["hf_legacy"][i].get<std::vector<int>>()) << i << ": " << t;
    EXPECT_EQ(ids, g["slow"][i].get<std::vector<int>>()) << i << ": " << t;  // HF's slow LlamaTokenizer agrees
    EXPECT_EQ(tok->decode(ids), g["decode"][i].get<std::string>()) << t;
    EXPECT_EQ(from_dir->encode(t), ids);
  }
}

TEST(TokenizerLlama2, MalformedModelFileGivesFormatError) {
  std::string dir = test::temp_dir("spm-bad");
  for (const std::string& content : {std::string("\x0a\xff\xff\xff\xff\x0f", 6), std::string("\x0a\x05" "ab", 4)}) {
    std::string path = dir + "/tokenizer.model";
    file_write_atomic(path, content);
    try {
      tokenizer_load_file(path);
      ADD_FAILURE() << "no error";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

#ifdef PATCHLLM_HAVE_SPM_REFERENCE
// The library's protobuf reader sees the same pieces, scores, types and special ids as libsentencepiece.
TEST(TokenizerLlama2, ModelReaderAgreesWithLibSentencePiece) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  SpmModel m = spm_model_read(model);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(model).ok());
  ASSERT_EQ(static_cast<int>(m.pieces.size()), sp.GetPieceSize());
  for (int i = 0; i < sp.GetPieceSize(); ++i) {
    EXPECT_EQ(m.pieces[i], sp.IdToPiece(i)) << i;
    EXPECT_EQ(m.scores[i], sp.GetScore(i)) << i;
    int type = sp.IsUnknown(i) ? TOKEN_TYPE_UNKNOWN : sp.IsControl(i) ? TOKEN_TYPE_CONTROL
               : sp.IsByte(i)  ? TOKEN_TYPE_BYTE    : sp.IsUnused(i)  ? TOKEN_TYPE_UNUSED
                                                                      : TOKEN_TYPE_NORMAL;
    EXPECT_EQ(m.types[i], type) << i;
  }
  EXPECT_EQ(m.unk_id, sp.unk_id());
  EXPECT_EQ(m.bos_id, sp.bos_id());
  EXPECT_EQ(m.eos_id, sp.eos_id());
}

// libsentencepiece as an independent reference: HF's ids are SentencePiece's ids.
TEST(TokenizerLlama2, LibSentencePieceAgreesWithHf) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  json g = golden();
  auto ref = tokenizer_load_libsentencepiece(model);
  auto tok = tokenizer_load_file(model);
  for (size_t i = 0; i < g["texts"].size(); ++i) {
    std::string t = g["texts"][i];
    auto ids = ref->encode(t);
    // special tokens split out of the text first, as HF's slow LlamaTokenizer does ...
    EXPECT_EQ(ids, g["slow"][i].get<std::vector<int>>()) << i << ": " << t;
    // ... and without them it is plain SentencePiece (the python binding) with BOS.
    if (t.find('<') == std::string::npos) EXPECT_EQ(ids, g["spm"][i].get<std::vector<int>>()) << t;
    EXPECT_EQ(ref->decode(ids), g["decode"][i].get<std::string>()) << t;
    EXPECT_EQ(tok->encode(t), ids) << t;
  }
}
#endif

TEST(TokenizerLlama2, WikitextTestMatchesHfAndIsFast) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  PATCHLLM_REQUIRE_SHARED(wiki, "data/wikitext-2-raw/wiki.test.raw");
  json g = golden()["wiki_test"];
  std::string text = file_read(wiki);
  Built b = build_from_model(model);
  auto tok = tokenizer_from_json(b.tj, b.cfg, "llama2 (built)");
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok->encode(text);
  double hf_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids.size(), g["n_ids"].get<size_t>());
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + 64), g["head"].get<std::vector<int>>());
  EXPECT_EQ(ids_digest(ids), g["sha256_ids_le32"].get<std::string>());
  double spm_s = -1;
#ifdef PATCHLLM_HAVE_SPM_REFERENCE
  auto spm = tokenizer_load_libsentencepiece(model);
  t0 = std::chrono::steady_clock::now();
  auto spm_ids = spm->encode(text);
  spm_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(spm_ids == ids) << "libsentencepiece differs on wiki.test.raw";
#endif
  t0 = std::chrono::steady_clock::now();
  std::string back = tok->decode(ids);
  double dec_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(back, text);
  std::printf("wiki.test.raw (%zu bytes, %zu ids): tokenizer.json BPE encode %.3f s, libsentencepiece %.3f s, "
              "decode %.3f s\n", text.size(), ids.size(), hf_s, spm_s, dec_s);
  EXPECT_LT(hf_s, 10.0);
}

}  // namespace
}  // namespace patchllm
