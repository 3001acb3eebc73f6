// Gemma 3 (text) against Hugging Face transformers: tests/data/gemma3-tiny is a tiny random Gemma3ForCausalLM and
// transformers' fp32 logits for it (tools/gen_gemma3_golden.py): plain batch, left padding, KV cache, greedy
// generation. Error metric: max |ours - HF| / max |HF| over the compared logits.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "model/model.h"
#include "test_util.h"
#include "torch_test_util.h"

using namespace patchllm;
using test::rel_err;

namespace {

const double kTol = 1e-4;

std::string tiny_dir() { return test::source_dir() + "/tests/data/gemma3-tiny"; }

const SafetensorsFile& golden() {
  static SafetensorsFile f(tiny_dir() + "/golden.safetensors");
  return f;
}

// A copy of the tiny checkpoint with another config.json (same weights).
std::string with_config(const std::string& tag, const nlohmann::json& cfg) {
  auto d = test::temp_dir(tag);
  file_write_atomic(d + "/model.safetensors", file_read(tiny_dir() + "/model.safetensors"));
  file_write_atomic(d + "/config.json", cfg.dump(2));
  return d;
}

nlohmann::json tiny_config() { return nlohmann::json::parse(file_read(tiny_dir() + "/config.json")); }

}  // namespace

TEST(Gemma3, ConfigOfTransformers5) {
  auto c = config_load(tiny_dir());
  EXPECT_TRUE(c.is_gemma3());
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.hidden_size / c.num_heads, 16);
  EXPECT_EQ(c.sliding_window, 4);
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, false, true, false}));
  EXPECT_TRUE(c.layer_is_sliding(0));
  EXPECT_FALSE(c.layer_is_sliding(1));
  EXPECT_DOUBLE_EQ(c.rope_theta, 50000.0);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  EXPECT_DOUBLE_EQ(c.rope_local_theta, 1000.0);
  EXPECT_EQ(c.rope_local_scaling.type, "none");
  EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, 24.0);
  EXPECT_EQ(c.hidden_act, "gelu_pytorch_tanh");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.attn_logit_softcapping, 0.0);
  EXPECT_EQ(c.final_logit_softcapping, 0.0);
}

TEST(Gemma3, LogitsMatchTransformers) {
  auto m = Model::load(tiny_dir());
  torch::NoGradGuard ng;
  auto logits = m->forward(golden().load("full_ids"));
  double e = rel_err(logits, golden().load("full_logits"));
  EXPECT_LE(e, kTol);
  std::printf("plain batch: max relative logit error %.3g\n", e);
}

TEST(Gemma3, LeftPaddedBatchMatchesTransformers) {
  auto m = Model::load(tiny_dir());
  torch::NoGradGuard ng;
  auto mask = golden().load("pad_mask");
  auto logits = m->forward(golden().load("pad_ids"), nullptr, mask);
  auto keep = mask.to(torch::kBool).unsqueeze(-1).expand_as(logits);  // padding positions' outputs are unused
  double e = rel_err(logits.masked_select(keep), golden().load("pad_logits").masked_select(keep));
  EXPECT_LE(e, kTol);
  std::printf("left-padded batch: max relative logit error %.3g\n", e);
}

TEST(Gemma3, KvCacheContinuationMatchesTransformers) {
  auto m = Model::load(tiny_dir());
  torch::NoGradGuard ng;
  auto ids = golden().load("cache_ids");
  auto pre = golden().load("cache_logits_prefix"), chunk = golden().load("cache_logits_chunk"),
       step = golden().load("cache_logits_step");
  const int64_t P = pre.size(1), C = chunk.size(1);
  KVCache cache = m->make_cache(1, ids.size(1));
  double e = rel_err(m->forward(ids.narrow(1, 0, P), &cache), pre);
  e = std::max(e, rel_err(m->forward(ids.narrow(1, P, C), &cache), chunk));  // several tokens after a prefix
  e = std::max(e, rel_err(m->forward(ids.narrow(1, P + C, 1), &cache), step));
  EXPECT_LE(e, kTol);
  std::printf("KV cache: max relative logit error %.3g\n", e);
}

TEST(Gemma3, GreedyGenerationMatchesTransformers) {
  auto m = Model::load(tiny_dir());
  auto p = golden().load("gen_prompt").view({-1});
  auto want = golden().load("gen_ids").view({-1});
  std::vector<int> prompt(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
  SamplingOptions o;
  o.max_new_tokens = want.numel();  // past the sliding window, so the cache's local layers are masked
  auto got = generate(*m, prompt, o);
  ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel());
  for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(got[i], want[i].item<int64_t>()) << "token " << i;
}

TEST(Gemma3, OlderConfigKeysGiveTheSameModel) {
  // transformers 4.x Gemma3TextConfig keys: rope_theta / rope_local_base_freq / rope_scaling / sliding_window_pattern.
  auto c = tiny_config();
  c.erase("rope_parameters");
  c.erase("layer_types");
  c["rope_theta"] = 50000.0;
  c["rope_local_base_freq"] = 1000.0;
  c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  c["sliding_window_pattern"] = 2;
  // model_type gemma3: the same keys nested in text_config.
  nlohmann::json nested = {{"architectures", {"Gemma3ForCausalLM"}}, {"model_type", "gemma3"}, {"text_config", c}};
  nested["text_config"].erase("architectures");
  for (const auto& dir : {with_config("gemma3_old", c), with_config("gemma3_nested", nested)}) {
    auto m = Model::load(dir);
    EXPECT_EQ(m->config.sliding_layers, (std::vector<bool>{true, false, true, false})) << dir;
    torch::NoGradGuard ng;
    EXPECT_LE(rel_err(m->forward(golden().load("full_ids")), golden().load("full_logits")), kTol) << dir;
  }
}

TEST(Gemma3, SlidingWindowAndLocalRopeMatter) {
  // The golden data must exercise both layer kinds: dropping the window or the local RoPE base changes the logits.
  auto want = golden().load("full_logits");
  auto c = tiny_config();
  c["sliding_window"] = 100;
  auto m = Model::load(with_config("gemma3_nowin", c));
  torch::NoGradGuard ng;
  EXPECT_GT(rel_err(m->forward(golden().load("full_ids")), want), 1e-2);
  c = tiny_config();
  c["rope_parameters"]["sliding_attention"]["rope_theta"] = 50000.0;
  m = Model::load(with_config("gemma3_rope", c));
  EXPECT_GT(rel_err(m->forward(golden().load("full_ids")), want), 1e-3);
}

TEST(Gemma3, LayerByLayerEqualsForward) {
  // Calibration and mask learning run embed_tokens / make_context / layer_forward / head themselves.
  auto m = Model::load(tiny_dir());
  torch::NoGradGuard ng;
  auto ids = golden().load("full_ids");
  auto h = m->embed_tokens(ids);
  auto ctx = m->make_context(ids.size(0), ids.size(1));
  for (int64_t i = 0; i < m->config.num_layers; ++i) h = m->layer_forward(i, h, ctx);
  EXPECT_LE(rel_err(m->head(h), golden().load("full_logits")), kTol);
}

TEST(Gemma3, LinearsExposeTheSevenProjectionsPerLayer) {
  auto m = Model::load(tiny_dir());
  auto lin = m->linears();
  ASSERT_EQ(lin.size(), 4u * 7u);
  EXPECT_EQ(lin[0].first, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ((*lin[0].second)->weight.sizes(), (std::vector<int64_t>{4 * 32, 64}));
  EXPECT_EQ(lin[1].first, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ((*lin[3].second)->weight.sizes(), (std::vector<int64_t>{64, 4 * 32}));
  EXPECT_EQ(lin[27].first, "model.layers.3.mlp.down_proj.weight");
  EXPECT_EQ((*lin[27].second)->weight.sizes(), (std::vector<int64_t>{64, 96}));
  // The slots are what forward() uses: replacing one changes the logits.
  torch::NoGradGuard ng;
  auto ids = golden().load("full_ids");
  auto before = m->forward(ids);
  *lin[12].second = std::make_shared<Linear>(torch::zeros_like((*lin[12].second)->weight));  // layer 1 gate
  EXPECT_GT(rel_err(m->forward(ids), before), 1e-3);
  // Parameters: embedding (tied), final norm, and per layer 7 linears + 4 norms of [hidden] + 2 of [head_dim].
  const int64_t per_layer = 4 * 32 * 64 * 2 + 2 * 32 * 64 * 2 + 96 * 64 * 3 + 4 * 64 + 2 * 32;
  EXPECT_EQ(m->num_parameters(), 300 * 64 + 64 + 4 * per_layer);
}

TEST(Gemma3, AttentionSoftcapAndScaleMatchFormula) {
  // Gemma 3 has no soft-capping, but Gemma-style configs may set attn_logit_softcapping: check the explicit path.
  torch::manual_seed(5);
  const int64_t B = 1, H = 2, T = 4, D = 8;
  auto q = torch::randn({B, H, T, D}) * 3, k = torch::randn({B, H, T, D}) * 3, v = torch::randn({B, H, T, D});
  const double scale = 0.2, cap = 2.5;
  auto y = attention(q, k, v, {}, /*causal=*/true, scale, cap);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> w;
      double z = 0;
      for (int64_t s = 0; s <= t; ++s) {
        double sc = (q[0][h][t] * k[0][h][s]).sum().item<double>() * scale;
        w.push_back(std::exp(cap * std::tanh(sc / cap)));
        z += w.back();
      }
      for (int64_t d = 0; d < D; ++d) {
        double want = 0;
        for (int64_t s = 0; s <= t; ++s) want += w[s] / z * v[0][h][s][d].item<double>();
        EXPECT_NEAR(y[0][h][t][d].item<double>(), want, 1e-5);
      }
    }
  auto y2 = attention(q, k, v, {}, true, scale);  // scale without softcap
  auto ref = attention(q * (scale * std::sqrt(static_cast<double>(D))), k, v, {}, true);
  EXPECT_TRUE(torch::allclose(y2, ref, 1e-5, 1e-5));
}

TEST(Gemma3, UnsupportedArchitectureIsOneLineError) {
  auto c = tiny_config();
  c["architectures"] = {"Gemma2ForCausalLM"};
  c["model_type"] = "gemma2";
  auto dir = with_config("gemma2", c);
  try {
    Model::load(dir);
    FAIL() << "Gemma2ForCausalLM loaded";
  } catch (const InvalidArgument& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("unsupported architecture Gemma2ForCausalLM"), std::string::npos) << msg;
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  c = tiny_config();
  c["hidden_activation"] = "relu";
  EXPECT_THROW(Model::load(with_config("gemma3_relu", c)), InvalidArgument);
  c = tiny_config();
  c["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_THROW(Model::load(with_config("gemma3_types", c)), FormatError);
}
