// `patchllm convert --to gguf` end to end on tiny random Hugging Face checkpoints written here (safetensors and
// tokenizer.json by hand, so this test stays torch-free like test_gguf_hf): the GGUF file is checked against
// llama.cpp's conventions (names, types, Q/K permutation transcribed from convert_hf_to_gguf.py, llama3 rope_freqs
// from its formula in double precision, tokenizer keys), then converted back with `convert --from gguf`: every
// tensor must come back bit-exact and `eval logits` must give identical logits. Plus the one-line error cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "gguf/gguf.h"
#include "test_util.h"

namespace patchllm {
namespace {

using json = nlohmann::json;

struct Tensor {
  std::string dtype;  // F32, BF16, I64
  std::vector<int64_t> shape;
  std::string bytes;
};
using Tensors = std::map<std::string, Tensor>;

void write_safetensors(const std::string& path, const Tensors& ts) {
  json h = json::object();
  uint64_t off = 0;
  for (const auto& [n, t] : ts) {
    h[n] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';
  std::string out(8, '\0');
  uint64_t n = hs.size();
  std::memcpy(&out[0], &n, 8);
  out += hs;
  for (const auto& [name, t] : ts) out += t.bytes;
  file_write_atomic(path, out);
}

Tensors read_safetensors(const std::string& path) {
  std::string d = file_read(path);
  uint64_t n;
  std::memcpy(&n, d.data(), 8);
  json h = json::parse(d.substr(8, n));
  Tensors ts;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    Tensor t;
    t.dtype = (*it)["dtype"];
    t.shape = (*it)["shape"].get<std::vector<int64_t>>();
    uint64_t b = (*it)["data_offsets"][0], e = (*it)["data_offsets"][1];
    t.bytes = d.substr(8 + n + b, e - b);
    ts[it.key()] = t;
  }
  return ts;
}

float elem(const Tensor& t, int64_t i) {
  if (t.dtype == "F32") {
    float f;
    std::memcpy(&f, t.bytes.data() + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, t.bytes.data() + 2 * i, 2);
  uint32_t u = static_cast<uint32_t>(h) << 16;  // bf16 -> f32 is a shift
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Spec {
  std::string arch = "LlamaForCausalLM";
  int64_t hidden = 64, inter = 96, layers = 2, heads = 4, kv_heads = 4, head_dim = 0;
  bool tied = false, bias = false, llama3 = false, bf16 = true;
  std::string tokenizer = "spm";  // spm | bytelevel
};

// GPT-2's byte -> unicode table (byte-level BPE alphabet).
std::string byte_char(int b) {
  static std::map<int, int> m = [] {
    std::map<int, int> r;
    int n = 0;
    for (int c = 0; c < 256; ++c) {
      bool keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
      r[c] = keep ? c : 256 + n++;
    }
    return r;
  }();
  int cp = m[b];
  std::string s;
  if (cp < 0x80) s += static_cast<char>(cp);
  else s += static_cast<char>(0xC0 | (cp >> 6)), s += static_cast<char>(0x80 | (cp & 0x3F));
  return s;
}

const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kSp = "\xe2\x96\x81";  // ▁

// Returns the vocabulary size (embedding rows).
int64_t write_tokenizer(const std::string& dir, const Spec& s) {
  json vocab = json::object(), added = json::array(), tok, cfg;
  if (s.tokenizer == "spm") {
    vocab["<unk>"] = 0, vocab["<s>"] = 1, vocab["</s>"] = 2;
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      vocab[buf] = 3 + b;
    }
    int id = 259;
    for (std::string p : {kSp, std::string("a"), std::string("b"), std::string("c"), kSp + "a", std::string("ab"),
                          kSp + "ab", std::string("abc")})
      vocab[p] = id++;
    for (int i = 0; i < 3; ++i)
      added.push_back({{"id", i}, {"content", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>"}, {"special", true},
                       {"normalized", false}, {"lstrip", false}, {"rstrip", false}, {"single_word", false}});
    tok = {{"version", "1.0"},
           {"added_tokens", added},
           {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", kSp}},
                                                                  {{"type", "Replace"}, {"pattern", {{"String", " "}}},
                                                                   {"content", kSp}}}}}},
           {"pre_tokenizer", nullptr},
           {"post_processor", {{"type", "TemplateProcessing"},
                               {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                               {"pair", json::array()},
                               {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
           {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", kSp}}},
                                                             {"content", " "}},
                                                            {{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}},
           {"model", {{"type", "BPE"}, {"byte_fallback", true}, {"unk_token", "<unk>"}, {"fuse_unk", true},
                      {"vocab", vocab},
                      {"merges", {kSp + " a", "a b", kSp + "a b", "ab c"}}}}};
    cfg = {{"add_bos_token", true}, {"add_eos_token", false}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
           {"unk_token", "<unk>"}, {"tokenizer_class", "LlamaTokenizerFast"}};
    file_write_atomic(dir + "/tokenizer.json", tok.dump());
    file_write_atomic(dir + "/tokenizer_config.json", cfg.dump());
    return 272;  // 267 tokens + 5 rows without a token
  }
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::string G = byte_char(' ');
  vocab[G + "a"] = 256, vocab["ab"] = 257;
  added.push_back({{"id", 258}, {"content", "<|endoftext|>"}, {"special", true}});
  added.push_back({{"id", 259}, {"content", "<|im_end|>"}, {"special", true}});
  added.push_back({{"id", 260}, {"content", "<tool_call>"}, {"special", false}});
  tok = {{"version", "1.0"},
         {"added_tokens", added},
         {"normalizer", {{"type", "NFC"}}},
         {"pre_tokenizer", {{"type", "Sequence"},
                            {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", kQwen2Regex}}},
                                                {"behavior", "Isolated"}, {"invert", false}},
                                               {{"type", "ByteLevel"}, {"add_prefix_space", false},
                                                {"trim_offsets", false}, {"use_regex", false}}}}}},
         {"post_processor", nullptr},
         {"decoder", {{"type", "ByteLevel"}}},
         {"model", {{"type", "BPE"}, {"byte_fallback", false}, {"vocab", vocab},
                    {"merges", json::array({json::array({G, "a"}), json::array({"a", "b"})})}}}};
  cfg = {{"add_bos_token", false}, {"bos_token", nullptr}, {"eos_token", "<|im_end|>"},
         {"pad_token", "<|endoftext|>"}, {"tokenizer_class", "Qwen2Tokenizer"}};
  file_write_atomic(dir + "/tokenizer.json", tok.dump());
  file_write_atomic(dir + "/tokenizer_config.json", cfg.dump());
  return 264;
}

// A random checkpoint; linear weights pruned 2:4 to exact zeros, as `patchllm export` writes them.
std::string write_model(const std::string& dir, const Spec& s, uint32_t seed) {
  dir_create(dir);
  const int64_t vocab = write_tokenizer(dir, s);
  const int64_t hd = s.head_dim ? s.head_dim : s.hidden / s.heads;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Tensors ts;
  auto add = [&](const std::string& n, std::vector<int64_t> shape, float scale, float offset, bool prune) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    Tensor t{s.bf16 ? "BF16" : "F32", shape, ""};
    for (int64_t i = 0; i < numel; ++i) {
      float v = offset + scale * nd(rng);
      if (prune && (i % 4) < 2) v = 0.0f;
      if (s.bf16) {
        uint16_t h = gguf_fp32_to_bf16(v);
        t.bytes.append(reinterpret_cast<const char*>(&h), 2);
      } else {
        t.bytes.append(reinterpret_cast<const char*>(&v), 4);
      }
    }
    ts[n] = t;
  };
  add("model.embed_tokens.weight", {vocab, s.hidden}, 0.5f, 0, false);
  add("model.norm.weight", {s.hidden}, 0.1f, 1, false);
  if (!s.tied) add("lm_head.weight", {vocab, s.hidden}, 0.1f, 0, false);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {s.hidden}, 0.1f, 1, false);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 0.1f, 1, false);
    add(p + "self_attn.q_proj.weight", {s.heads * hd, s.hidden}, 0.15f, 0, true);
    add(p + "self_attn.k_proj.weight", {s.kv_heads * hd, s.hidden}, 0.15f, 0, true);
    add(p + "self_attn.v_proj.weight", {s.kv_heads * hd, s.hidden}, 0.15f, 0, true);
    add(p + "self_attn.o_proj.weight", {s.hidden, s.heads * hd}, 0.15f, 0, true);
    add(p + "mlp.gate_proj.weight", {s.inter, s.hidden}, 0.15f, 0, true);
    add(p + "mlp.up_proj.weight", {s.inter, s.hidden}, 0.15f, 0, true);
    add(p + "mlp.down_proj.weight", {s.hidden, s.inter}, 0.15f, 0, true);
    if (s.bias) {
      add(p + "self_attn.q_proj.bias", {s.heads * hd}, 0.1f, 0, false);
      add(p + "self_attn.k_proj.bias", {s.kv_heads * hd}, 0.1f, 0, false);
      add(p + "self_attn.v_proj.bias", {s.kv_heads * hd}, 0.1f, 0, false);
    }
  }
  json c = {{"architectures", {s.arch}}, {"hidden_size", s.hidden}, {"intermediate_size", s.inter},
            {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads}, {"num_key_value_heads", s.kv_heads},
            {"vocab_size", vocab}, {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5},
            {"rope_theta", 10000.0}, {"hidden_act", "silu"}, {"tie_word_embeddings", s.tied},
            {"torch_dtype", s.bf16 ? "bfloat16" : "float32"}};
  if (s.head_dim) c["head_dim"] = s.head_dim;
  if (s.tokenizer == "spm") c["bos_token_id"] = 1, c["eos_token_id"] = 2;
  else c["bos_token_id"] = 258, c["eos_token_id"] = 259;
  if (s.llama3)
    c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  write_safetensors(dir + "/model.safetensors", ts);
  file_write_atomic(dir + "/config.json", c.dump(2));
  return dir;
}

// llama.cpp convert_hf_to_gguf.py LlamaModel.permute, transcribed (reshape(n_head, 2, half, cols).swapaxes(1, 2)):
// source [h, j, i, c] lands at [h, i, j, c]. Works on rows of any byte width.
std::string llamacpp_permute(const std::string& w, int64_t rows, int64_t n_head) {
  const int64_t half = rows / n_head / 2;
  const size_t rb = w.size() / rows;
  std::string out(w.size(), '\0');
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(&out[((h * half + i) * 2 + j) * rb], &w[((h * 2 + j) * half + i) * rb], rb);
  return out;
}

std::string gguf_bytes(const GgufFile& f, const std::string& name) {
  const GgufTensor& t = f.tensor(name);
  return std::string(reinterpret_cast<const char*>(f.tensor_data(t)), t.n_bytes);
}

std::string q(const std::string& s) { return "'" + s + "'"; }

void check_roundtrip(const Spec& s, const std::string& tag) {
  SCOPED_TRACE(tag);
  const std::string root = test::temp_dir("gguf_export_" + tag);
  const std::string a = write_model(root + "/a", s, 7), g = root + "/a.gguf", b = root + "/b";
  const std::string dt = s.bf16 ? "bf16" : "f32";
  auto r = test::run_cli("convert --to gguf -m " + q(a) + " -o " + q(g) + " --dtype " + dt);
  ASSERT_EQ(r.code, 0) << r.err;
  const Tensors src = read_safetensors(a + "/model.safetensors");
  const json cfg = json::parse(file_read(a + "/config.json"));

  // The GGUF file as llama.cpp reads it.
  {
    GgufFile f(g);
    const std::string arch = s.arch == "Qwen2ForCausalLM" ? "qwen2" : "llama";
    EXPECT_EQ(f.get_string("general.architecture"), arch);
    EXPECT_EQ(f.get_int("general.file_type"), s.bf16 ? 32 : 0);
    EXPECT_EQ(f.get_int("general.alignment"), 32);
    EXPECT_EQ(f.get_int(arch + ".block_count"), s.layers);
    EXPECT_EQ(f.get_int(arch + ".embedding_length"), s.hidden);
    EXPECT_EQ(f.get_int(arch + ".feed_forward_length"), s.inter);
    EXPECT_EQ(f.get_int(arch + ".attention.head_count"), s.heads);
    EXPECT_EQ(f.get_int(arch + ".attention.head_count_kv"), s.kv_heads);
    EXPECT_EQ(f.get_int(arch + ".context_length"), 128);
    EXPECT_FLOAT_EQ(f.get_float(arch + ".attention.layer_norm_rms_epsilon"), 1e-5f);
    EXPECT_EQ(f.get_float(arch + ".rope.freq_base"), 10000.0);
    EXPECT_EQ(f.has(arch + ".attention.key_length"), s.head_dim != 0);
    EXPECT_EQ(f.find_tensor("output.weight") != nullptr, !s.tied);
    const int64_t hd = s.head_dim ? s.head_dim : s.hidden / s.heads;
    for (const auto& [n, t] : src) {
      std::string gn = n == "model.embed_tokens.weight" ? "token_embd.weight"
                       : n == "model.norm.weight"       ? "output_norm.weight"
                       : n == "lm_head.weight"          ? "output.weight"
                                                        : "";
      if (gn.empty()) {
        static const std::map<std::string, std::string> m = {
            {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"}, {"self_attn.q_proj", "attn_q"},
            {"self_attn.k_proj", "attn_k"},   {"self_attn.v_proj", "attn_v"},           {"self_attn.o_proj", "attn_output"},
            {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},                {"mlp.down_proj", "ffn_down"}};
        const size_t d1 = n.find('.', 13), dl = n.rfind('.');
        gn = "blk." + n.substr(13, d1 - 13) + "." + m.at(n.substr(d1 + 1, dl - d1 - 1)) + n.substr(dl);
      }
      const GgufTensor* gt = f.find_tensor(gn);
      ASSERT_NE(gt, nullptr) << gn;
      EXPECT_EQ(gt->shape(), t.shape) << gn;
      // 1-D tensors are F32 (llama.cpp's convention); matrices in the requested type.
      const GgmlType want = t.shape.size() == 1 || !s.bf16 ? GgmlType::F32 : GgmlType::BF16;
      EXPECT_EQ(gt->type, want) << gn;
      std::string expect = t.bytes;
      if (want == GgmlType::F32 && t.dtype == "BF16") {
        expect.clear();
        for (size_t i = 0; i < t.bytes.size() / 2; ++i) {
          float v = elem(t, i);
          expect.append(reinterpret_cast<const char*>(&v), 4);
        }
      }
      const bool qk = n.find("q_proj") != std::string::npos || n.find("k_proj") != std::string::npos;
      if (arch == "llama" && qk) {
        const int64_t nh = n.find("q_proj") != std::string::npos ? s.heads : s.kv_heads;
        expect = llamacpp_permute(expect, nh * hd, nh);
      }
      EXPECT_TRUE(gguf_bytes(f, gn) == expect) << gn << " differs from the llama.cpp layout";
    }
    if (s.llama3) {
      // convert_hf_to_gguf.py's llama3 factors, in double precision here.
      std::vector<float> rf = f.dequantize(f.tensor("rope_freqs.weight"));
      ASSERT_EQ(static_cast<int64_t>(rf.size()), hd / 2);
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double freq = 1.0 / std::pow(10000.0, 2.0 * i / hd), wl = 2 * M_PI / freq;
        const double want = wl < 8192 / 4.0 ? 1.0 : wl > 8192 ? 8.0 : 1 / ((1 - (8192 / wl - 1) / 3) / 8 + (8192 / wl - 1) / 3);
        EXPECT_NEAR(rf[i], want, 1e-5 * want) << i;
      }
    } else {
      EXPECT_EQ(f.find_tensor("rope_freqs.weight"), nullptr);
    }
    // Tokenizer keys.
    const auto& toks = f.get_strings("tokenizer.ggml.tokens");
    const auto& types = f.get_ints("tokenizer.ggml.token_type");
    const json tj = json::parse(file_read(a + "/tokenizer.json"));
    ASSERT_EQ(static_cast<int64_t>(toks.size()), src.at("model.embed_tokens.weight").shape[0]);
    for (auto it = tj["model"]["vocab"].begin(); it != tj["model"]["vocab"].end(); ++it)
      EXPECT_EQ(toks[it->get<int>()], it.key());
    if (s.tokenizer == "spm") {
      EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
      EXPECT_EQ(types[0], 2);    // unknown
      EXPECT_EQ(types[1], 3);    // control
      EXPECT_EQ(types[3], 6);    // <0x00>: byte
      EXPECT_EQ(types[259], 1);  // normal
      EXPECT_EQ(types[270], 5);  // no token: unused
      EXPECT_EQ(toks[270], "[PAD270]");
      const auto& sc = f.get_floats("tokenizer.ggml.scores");
      // merge rank r makes piece score -r: "▁a" (263) 0, "ab" (264) -1, "▁ab" (265) -2, "abc" (266) -3
      EXPECT_EQ(sc[263], 0.0);
      EXPECT_EQ(sc[266], -3.0);
      EXPECT_LT(sc[260], -3.0);
      EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id"), 1);
      EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), 2);
      EXPECT_EQ(f.get_int("tokenizer.ggml.unknown_token_id"), 0);
      EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token", false));
      EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_space_prefix", false));
    } else {
      EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
      EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "qwen2");
      EXPECT_EQ(f.get_strings("tokenizer.ggml.merges"), (std::vector<std::string>{byte_char(' ') + " a", "a b"}));
      EXPECT_EQ(types[257], 1);
      EXPECT_EQ(types[258], 3);
      EXPECT_EQ(types[260], 4);  // added, not special: user-defined
      EXPECT_EQ(types[261], 5);
      EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id"), 258);  // config.json (tokenizer_config has none)
      EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), 259);
      EXPECT_EQ(f.get_int("tokenizer.ggml.padding_token_id"), 258);
      EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_bos_token", true));
    }
  }

  // Back to Hugging Face: every tensor bit-exact (pruned zeros included), identical logits.
  r = test::run_cli("convert --from gguf " + q(g) + " -o " + q(b) + (s.bf16 ? "" : " --fp32"));
  ASSERT_EQ(r.code, 0) << r.err;
  const Tensors back = read_safetensors(b + "/model.safetensors");
  ASSERT_EQ(back.size(), src.size());
  for (const auto& [n, t] : src) {
    ASSERT_TRUE(back.count(n)) << n;
    EXPECT_EQ(back.at(n).dtype, t.dtype) << n;
    EXPECT_EQ(back.at(n).shape, t.shape) << n;
    EXPECT_TRUE(back.at(n).bytes == t.bytes) << n << " changed in the round trip";
  }
  const json tb = json::parse(file_read(b + "/tokenizer.json"));
  const json ta = json::parse(file_read(a + "/tokenizer.json"));
  for (auto it = ta["model"]["vocab"].begin(); it != ta["model"]["vocab"].end(); ++it)
    EXPECT_EQ(tb["model"]["vocab"].value(it.key(), -1), it->get<int>()) << it.key();

  Tensors in;
  Tensor ids{"I64", {1, 9}, ""};
  for (int64_t v : {1, 5, 259, 263, 100, 17, 42, 260, 3}) ids.bytes.append(reinterpret_cast<const char*>(&v), 8);
  in["input_ids"] = ids;
  write_safetensors(root + "/ids.safetensors", in);
  for (const std::string& m : {a, b}) {
    r = test::run_cli("eval logits -m " + q(m) + " -i " + q(root + "/ids.safetensors") + " -o " +
                      q(m + ".logits.safetensors"));
    ASSERT_EQ(r.code, 0) << r.err;
  }
  const Tensor la = read_safetensors(a + ".logits.safetensors").at("logits");
  const Tensor lb = read_safetensors(b + ".logits.safetensors").at("logits");
  EXPECT_EQ(la.shape, lb.shape);
  EXPECT_TRUE(la.bytes == lb.bytes) << "logits differ after HF -> GGUF -> HF";
}

TEST(GgufExport, LlamaPermutedBf16) { check_roundtrip(Spec{}, "llama"); }

TEST(GgufExport, LlamaGqaLlama3RopeHeadDimF32) {
  Spec s;
  s.kv_heads = 2;
  s.head_dim = 32;  // != hidden / heads: key_length/value_length
  s.llama3 = true;
  s.bf16 = false;
  check_roundtrip(s, "gqa");
}

TEST(GgufExport, Qwen2BiasTiedBf16) {
  Spec s;
  s.arch = "Qwen2ForCausalLM";
  s.bias = true;
  s.tied = true;
  s.kv_heads = 2;
  s.tokenizer = "bytelevel";
  check_roundtrip(s, "qwen2");
}

TEST(GgufExport, ErrorsAreOneLineAndLeaveNoOutput) {
  const std::string root = test::temp_dir("gguf_export_errors");
  const std::string a = write_model(root + "/a", Spec{}, 1), out = root + "/out.gguf";
  auto one_line_error = [](const test::CliResult& r, const std::string& what) {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.err;
  };
  // Existing output without --force: refused, untouched.
  file_write_atomic(out, "keep");
  one_line_error(test::run_cli("convert --to gguf -m " + q(a) + " -o " + q(out)), "exists (use --force");
  EXPECT_EQ(file_read(out), "keep");
  auto r = test::run_cli("convert --to gguf -m " + q(a) + " -o " + q(out) + " --force");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NO_THROW(GgufFile f(out));

  // Unsupported architecture.
  const std::string c = write_model(root + "/gpt2", Spec{}, 1);
  json cfg = json::parse(file_read(c + "/config.json"));
  cfg["architectures"] = {"GPT2LMHeadModel"};
  file_write_atomic(c + "/config.json", cfg.dump());
  one_line_error(test::run_cli("convert --to gguf -m " + q(c) + " -o " + q(root + "/x.gguf")),
                 "unsupported architecture 'GPT2LMHeadModel'");
  // Missing files.
  const std::string d = write_model(root + "/notok", Spec{}, 1);
  std::remove((d + "/tokenizer.json").c_str());
  one_line_error(test::run_cli("convert --to gguf -m " + q(d) + " -o " + q(root + "/x.gguf")), "tokenizer.json: missing");
  one_line_error(test::run_cli("convert --to gguf -m " + q(root + "/nope") + " -o " + q(root + "/x.gguf")),
                 "not a directory");
  // A tokenizer GGUF cannot represent (WordPiece).
  const std::string e = write_model(root + "/wp", Spec{}, 1);
  json tj = json::parse(file_read(e + "/tokenizer.json"));
  tj["model"]["type"] = "WordPiece";
  file_write_atomic(e + "/tokenizer.json", tj.dump());
  one_line_error(test::run_cli("convert --to gguf -m " + q(e) + " -o " + q(root + "/x.gguf")),
                 "tokenizer model 'WordPiece' cannot be represented in GGUF");
  one_line_error(test::run_cli("convert --to gguf -m " + q(a) + " -o " + q(root + "/x.gguf") + " --dtype q4"),
                 "unknown --dtype 'q4'");
  EXPECT_FALSE(file_exists(root + "/x.gguf"));
}

}  // namespace
}  // namespace patchllm
