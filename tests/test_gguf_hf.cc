// GGUF -> Hugging Face mapping (src/gguf/gguf_hf.h): names, llama.cpp's Q/K permutation undone, config.json; and the
// end-to-end `patchllm convert --from gguf` on tiny files built here with GgufWriter (safetensors parsed by hand, so
// this test stays torch-free).
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "gguf/gguf.h"
#include "gguf/gguf_hf.h"
#include "test_util.h"

namespace patchllm {
namespace {

// llama.cpp convert_hf_to_gguf.py LlamaModel.permute, transcribed:
//   w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)
std::vector<float> llamacpp_permute(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  const int64_t half = rows / n_head / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i)
        for (int64_t c = 0; c < cols; ++c)
          // source index [h, j, i, c] lands at [h, i, j, c] after the swap
          out[((h * half + i) * 2 + j) * cols + c] = w[((h * 2 + j) * half + i) * cols + c];
  return out;
}

TEST(GgufHf, UnpermuteHandCase) {
  // One head of 4 rows: GGUF rows are HF rows 0, 2, 1, 3.
  std::vector<float> gguf = {0, 0.5f, 20, 20.5f, 10, 10.5f, 30, 30.5f};  // [4, 2]
  gguf_hf_unpermute_rows(gguf.data(), 4, 2, 1);
  EXPECT_EQ(gguf, (std::vector<float>{0, 0.5f, 10, 10.5f, 20, 20.5f, 30, 30.5f}));
}

TEST(GgufHf, UnpermuteInvertsLlamaCpp) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto [rows, cols, heads] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {8, 3, 2}, {16, 1, 4}, {64, 5, 1}, {24, 2, 3}}) {
    std::vector<float> hf(rows * cols);
    for (auto& x : hf) x = u(rng);
    std::vector<float> g = llamacpp_permute(hf, rows, cols, heads);
    EXPECT_NE(g, hf);
    gguf_hf_unpermute_rows(g.data(), rows, cols, heads);
    EXPECT_EQ(g, hf) << rows << "x" << cols << " heads " << heads;
  }
  std::vector<float> bad(6);
  EXPECT_THROW(gguf_hf_unpermute_rows(bad.data(), 6, 1, 2), InvalidArgument);
}

TEST(GgufHf, TensorNames) {
  EXPECT_EQ(gguf_hf_tensor_name("llama", "token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "output.weight"), "lm_head.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "rope_freqs.weight"), "");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight");
  EXPECT_EQ(gguf_hf_tensor_name("qwen2", "blk.0.attn_k.bias"), "model.layers.0.self_attn.k_proj.bias");
  EXPECT_EQ(gguf_hf_tensor_name("qwen2", "blk.3.attn_output.weight"), "model.layers.3.self_attn.o_proj.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "blk.1.ffn_gate.weight"), "model.layers.1.mlp.gate_proj.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "blk.1.ffn_up.weight"), "model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "blk.1.ffn_down.weight"), "model.layers.1.mlp.down_proj.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "blk.2.attn_norm.weight"), "model.layers.2.input_layernorm.weight");
  EXPECT_EQ(gguf_hf_tensor_name("llama", "blk.2.ffn_norm.weight"), "model.layers.2.post_attention_layernorm.weight");
  // Gemma 3: four norms per layer, ffn_norm is the pre-feed-forward one; QK-norm.
  EXPECT_EQ(gguf_hf_tensor_name("gemma3", "blk.2.ffn_norm.weight"), "model.layers.2.pre_feedforward_layernorm.weight");
  EXPECT_EQ(gguf_hf_tensor_name("gemma3", "blk.2.post_attention_norm.weight"),
            "model.layers.2.post_attention_layernorm.weight");
  EXPECT_EQ(gguf_hf_tensor_name("gemma3", "blk.2.post_ffw_norm.weight"),
            "model.layers.2.post_feedforward_layernorm.weight");
  EXPECT_EQ(gguf_hf_tensor_name("gemma3", "blk.0.attn_q_norm.weight"), "model.layers.0.self_attn.q_norm.weight");
  EXPECT_EQ(gguf_hf_tensor_name("gemma3", "blk.0.attn_k_norm.weight"), "model.layers.0.self_attn.k_norm.weight");
  EXPECT_THROW(gguf_hf_tensor_name("llama", "blk.0.post_ffw_norm.weight"), InvalidArgument);
  EXPECT_THROW(gguf_hf_tensor_name("llama", "blk.x.attn_q.weight"), InvalidArgument);
  EXPECT_THROW(gguf_hf_tensor_name("llama", "blk.0.attn_q.scale"), InvalidArgument);
  EXPECT_THROW(gguf_hf_tensor_name("llama", "mystery.weight"), InvalidArgument);
  EXPECT_EQ(gguf_hf_norm_shift("gemma3", "blk.0.attn_k_norm.weight"), -1.0f);
  EXPECT_EQ(gguf_hf_norm_shift("gemma3", "output_norm.weight"), -1.0f);
  EXPECT_EQ(gguf_hf_norm_shift("gemma3", "blk.0.attn_q.weight"), 0.0f);
  EXPECT_EQ(gguf_hf_norm_shift("llama", "output_norm.weight"), 0.0f);
}

TEST(GgufHf, ShortFloat) {
  EXPECT_EQ(gguf_hf_short_float(static_cast<double>(1e-6f)), 1e-6);
  EXPECT_EQ(gguf_hf_short_float(static_cast<double>(1e-5f)), 1e-5);
  EXPECT_EQ(gguf_hf_short_float(1000000.0), 1e6);
  EXPECT_EQ(gguf_hf_short_float(static_cast<double>(0.1f)), 0.1);
}

// ---------------------------------------------------------------------------------------------------------------
// Tiny models written with GgufWriter

struct Tiny {
  std::string arch;
  int64_t hidden = 8, heads = 2, kv = 1, hd = 4, ffn = 16, layers = 2;
  std::vector<std::string> tokens;
  std::vector<std::vector<float>> store;  // tensor data kept alive until write()
  GgufWriter w;

  explicit Tiny(const std::string& a) : arch(a) {
    store.reserve(64);
    const std::string P = arch + ".";
    w.add_kv("general.architecture", GgufValue::make_string(arch));
    w.add_kv(P + "embedding_length", GgufValue::make_int(GgufType::UINT32, hidden));
    w.add_kv(P + "feed_forward_length", GgufValue::make_int(GgufType::UINT32, ffn));
    w.add_kv(P + "block_count", GgufValue::make_int(GgufType::UINT32, layers));
    w.add_kv(P + "attention.head_count", GgufValue::make_int(GgufType::UINT32, heads));
    w.add_kv(P + "attention.head_count_kv", GgufValue::make_int(GgufType::UINT32, kv));
    w.add_kv(P + "attention.layer_norm_rms_epsilon", GgufValue::make_float(GgufType::FLOAT32, 1e-5));
    w.add_kv(P + "rope.freq_base", GgufValue::make_float(GgufType::FLOAT32, 500000.0));
    w.add_kv(P + "context_length", GgufValue::make_int(GgufType::UINT32, 256));
    if (arch == "gemma3") {
      w.add_kv(P + "attention.key_length", GgufValue::make_int(GgufType::UINT32, hd));
      w.add_kv(P + "attention.sliding_window", GgufValue::make_int(GgufType::UINT32, 32));
    }
    // SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte pieces, a few words.
    std::vector<int64_t> types;
    std::vector<double> scores;
    auto add = [&](const std::string& t, int type, double score) {
      tokens.push_back(t);
      types.push_back(type);
      scores.push_back(score);
    };
    add("<unk>", 2, 0);
    add("<s>", 3, 0);
    add("</s>", 3, 0);
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      add(buf, 6, 0);
    }
    add("\xe2\x96\x81" "a", 1, -1);
    add("b", 1, -2);
    add("\xe2\x96\x81" "ab", 1, -3);
    w.add_kv("tokenizer.ggml.model", GgufValue::make_string("llama"));
    w.add_kv("tokenizer.ggml.tokens", GgufValue::make_string_array(tokens));
    w.add_kv("tokenizer.ggml.scores", GgufValue::make_float_array(GgufType::FLOAT32, scores));
    w.add_kv("tokenizer.ggml.token_type", GgufValue::make_int_array(GgufType::INT32, types));
    w.add_kv("tokenizer.ggml.bos_token_id", GgufValue::make_int(GgufType::UINT32, 1));
    w.add_kv("tokenizer.ggml.eos_token_id", GgufValue::make_int(GgufType::UINT32, 2));
    w.add_kv("tokenizer.ggml.unknown_token_id", GgufValue::make_int(GgufType::UINT32, 0));
  }
  int64_t vocab() const { return static_cast<int64_t>(tokens.size()); }
  // Row-major [rows, cols] F32 with value(r, c) = 8 r + c + base (small integers: exact in bf16).
  void add(const std::string& name, int64_t rows, int64_t cols, float base = 0, bool permute_heads = false,
           int64_t n_head = 0) {
    std::vector<float> v(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = base + static_cast<float>((8 * r + c) % 200);
    if (permute_heads) v = llamacpp_permute(v, rows, cols, n_head);
    store.push_back(std::move(v));
    std::vector<int64_t> ne = cols == 1 ? std::vector<int64_t>{rows} : std::vector<int64_t>{cols, rows};
    w.add_tensor(name, GgmlType::F32, ne, store.back().data(), store.back().size() * 4);
  }
  void add_model(bool llama_permuted) {
    add("token_embd.weight", vocab(), hidden);
    add("output_norm.weight", hidden, 1, 1.5f);
    for (int64_t l = 0; l < layers; ++l) {
      std::string b = "blk." + std::to_string(l) + ".";
      add(b + "attn_norm.weight", hidden, 1, 1.5f);
      add(b + "attn_q.weight", heads * hd, hidden, 0, llama_permuted, heads);
      add(b + "attn_k.weight", kv * hd, hidden, 0, llama_permuted, kv);
      add(b + "attn_v.weight", kv * hd, hidden);
      add(b + "attn_output.weight", hidden, heads * hd);
      add(b + "ffn_norm.weight", hidden, 1, 1.5f);
      add(b + "ffn_gate.weight", ffn, hidden);
      add(b + "ffn_up.weight", ffn, hidden);
      add(b + "ffn_down.weight", hidden, ffn);
      if (arch == "gemma3") {
        add(b + "post_attention_norm.weight", hidden, 1, 1.5f);
        add(b + "post_ffw_norm.weight", hidden, 1, 1.5f);
        add(b + "attn_q_norm.weight", hd, 1, 1.5f);
        add(b + "attn_k_norm.weight", hd, 1, 1.5f);
      }
      if (arch == "qwen2") {
        add(b + "attn_q.bias", heads * hd, 1);
        add(b + "attn_k.bias", kv * hd, 1);
        add(b + "attn_v.bias", kv * hd, 1);
      }
    }
  }
};

TEST(GgufHf, ConfigFromMetadata) {
  std::string dir = test::temp_dir("gguf-hf");
  {
    Tiny t("llama");
    t.add_model(true);
    t.w.write(dir + "/llama.gguf");
    GgufFile f(dir + "/llama.gguf");
    nlohmann::json c = gguf_hf_config(f, false);
    EXPECT_EQ(c["architectures"][0], "LlamaForCausalLM");
    EXPECT_EQ(c["hidden_size"], 8);
    EXPECT_EQ(c["intermediate_size"], 16);
    EXPECT_EQ(c["num_hidden_layers"], 2);
    EXPECT_EQ(c["num_attention_heads"], 2);
    EXPECT_EQ(c["num_key_value_heads"], 1);
    EXPECT_EQ(c["head_dim"], 4);
    EXPECT_EQ(c["vocab_size"], t.vocab());
    EXPECT_EQ(c["rms_norm_eps"].get<double>(), 1e-5);
    EXPECT_EQ(c["rope_theta"].get<double>(), 500000.0);
    EXPECT_EQ(c["max_position_embeddings"], 256);
    EXPECT_EQ(c["tie_word_embeddings"], true);  // no output.weight
    EXPECT_EQ(c["bos_token_id"], 1);
    EXPECT_EQ(c["eos_token_id"], 2);
    EXPECT_EQ(c["torch_dtype"], "bfloat16");
    EXPECT_EQ(gguf_hf_config(f, true)["torch_dtype"], "float32");
    EXPECT_TRUE(c["rope_scaling"].is_null());
    EXPECT_EQ(gguf_hf_permute_heads(f, "blk.1.attn_q.weight"), 2);
    EXPECT_EQ(gguf_hf_permute_heads(f, "blk.1.attn_k.weight"), 1);
    EXPECT_EQ(gguf_hf_permute_heads(f, "blk.1.attn_v.weight"), 0);
  }
  {
    Tiny t("qwen2");
    t.add_model(false);
    t.add("output.weight", t.vocab(), t.hidden);
    t.w.write(dir + "/qwen2.gguf");
    GgufFile f(dir + "/qwen2.gguf");
    nlohmann::json c = gguf_hf_config(f, false);
    EXPECT_EQ(c["architectures"][0], "Qwen2ForCausalLM");
    EXPECT_EQ(c["tie_word_embeddings"], false);
    EXPECT_EQ(c["use_sliding_window"], false);
    EXPECT_EQ(gguf_hf_permute_heads(f, "blk.0.attn_q.weight"), 0);  // qwen2 is stored unpermuted
  }
  {
    Tiny t("gemma3");
    t.add_model(false);
    t.w.write(dir + "/gemma3.gguf");
    GgufFile f(dir + "/gemma3.gguf");
    nlohmann::json c = gguf_hf_config(f, false);
    EXPECT_EQ(c["architectures"][0], "Gemma3ForCausalLM");
    EXPECT_EQ(c["model_type"], "gemma3_text");
    EXPECT_EQ(c["sliding_window"], 32);
    EXPECT_EQ(c["query_pre_attn_scalar"], 4);
    EXPECT_EQ(c["rope_local_base_freq"].get<double>(), 10000.0);
    EXPECT_EQ(c["layer_types"], (nlohmann::json{"sliding_attention", "sliding_attention"}));
    EXPECT_EQ(c["hidden_activation"], "gelu_pytorch_tanh");
    EXPECT_EQ(gguf_hf_permute_heads(f, "blk.0.attn_q.weight"), 0);
  }
  {
    GgufWriter w;
    w.add_kv("general.architecture", GgufValue::make_string("mamba"));
    w.write(dir + "/mamba.gguf");
    GgufFile f(dir + "/mamba.gguf");
    try {
      gguf_hf_config(f, false);
      ADD_FAILURE() << "mamba accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("unsupported GGUF architecture 'mamba'"), std::string::npos) << e.what();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// End to end through the CLI (`convert --from gguf`), reading model.safetensors by hand.

struct St {
  nlohmann::json header;
  std::string bytes;
  size_t data_start = 0;
  std::vector<float> get(const std::string& name) const {
    const auto& e = header.at(name);
    size_t b = e["data_offsets"][0], end = e["data_offsets"][1];
    std::vector<float> out;
    const std::string dt = e["dtype"];
    for (size_t k = data_start + b; k < data_start + end; k += dt == "BF16" ? 2 : 4) {
      uint32_t bits = 0;
      if (dt == "BF16") {
        uint16_t h;
        std::memcpy(&h, &bytes[k], 2);
        bits = static_cast<uint32_t>(h) << 16;
      } else {
        std::memcpy(&bits, &bytes[k], 4);
      }
      float f;
      std::memcpy(&f, &bits, 4);
      out.push_back(f);
    }
    return out;
  }
};

St read_st(const std::string& path) {
  St s;
  s.bytes = file_read(path);
  uint64_t n;
  std::memcpy(&n, s.bytes.data(), 8);
  s.header = nlohmann::json::parse(s.bytes.substr(8, n));
  s.data_start = 8 + n;
  return s;
}

TEST(GgufHf, ConvertCliEndToEnd) {
  std::string dir = test::temp_dir("gguf-cli");
  for (const char* arch : {"llama", "gemma3"}) {
    SCOPED_TRACE(arch);
    Tiny t(arch);
    t.add_model(std::string(arch) == "llama");
    std::string in = dir + "/" + arch + ".gguf", out = dir + "/" + arch + "-hf";
    t.w.write(in);
    test::CliResult r = test::run_cli("convert --from gguf '" + in + "' -o '" + out + "'");
    if (r.code != 0 && r.err.find("gguf") != std::string::npos && r.err.find("unknown --from") != std::string::npos)
      GTEST_SKIP() << "the CLI does not wire `convert --from gguf` yet: " << r.err;
    ASSERT_EQ(r.code, 0) << r.err;
    St st = read_st(out + "/model.safetensors");
    const auto& h = st.header;
    EXPECT_EQ(h["model.embed_tokens.weight"]["dtype"], "BF16");
    EXPECT_EQ(h["model.embed_tokens.weight"]["shape"], (nlohmann::json{t.vocab(), 8}));
    EXPECT_EQ(h["model.layers.1.self_attn.q_proj.weight"]["shape"], (nlohmann::json{8, 8}));
    EXPECT_EQ(h["model.layers.1.self_attn.k_proj.weight"]["shape"], (nlohmann::json{4, 8}));
    EXPECT_EQ(h["model.layers.0.mlp.down_proj.weight"]["shape"], (nlohmann::json{8, 16}));
    EXPECT_FALSE(h.contains("lm_head.weight"));
    // Q/K come back in HF order (value 8 r + c) whether or not llama.cpp permuted them.
    for (const char* n : {"model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"}) {
      std::vector<float> q = st.get(n);
      for (size_t k = 0; k < q.size(); ++k) ASSERT_EQ(q[k], static_cast<float>((8 * (k / 8) + k % 8) % 200)) << n;
    }
    // Norms: stored 1.5 + 8 r; Gemma's are shifted back by 1.
    std::vector<float> norm = st.get("model.layers.0.input_layernorm.weight");
    EXPECT_EQ(norm[1], std::string(arch) == "gemma3" ? 8.5f : 9.5f);
    if (std::string(arch) == "gemma3") {
      EXPECT_EQ(st.get("model.layers.1.post_feedforward_layernorm.weight")[0], 0.5f);
      EXPECT_EQ(st.get("model.layers.1.self_attn.k_norm.weight")[2], 16.5f);
    }
    nlohmann::json cfg = nlohmann::json::parse(file_read(out + "/config.json"));
    EXPECT_EQ(cfg["num_key_value_heads"], 1);
    nlohmann::json tok = nlohmann::json::parse(file_read(out + "/tokenizer.json"));
    EXPECT_EQ(tok["model"]["type"], "BPE");
    EXPECT_EQ(tok["model"]["byte_fallback"], true);
    EXPECT_EQ(tok["model"]["vocab"]["\xe2\x96\x81" "ab"], t.vocab() - 1);
    EXPECT_TRUE(file_exists(out + "/tokenizer_config.json"));
    EXPECT_TRUE(file_exists(out + "/generation_config.json"));
  }
}

}  // namespace
}  // namespace patchllm
