// DecodeGraph (static-shape decode step; on the CPU it runs eagerly, the same step a CUDA graph captures): after an
// eager prefill, N static steps give the logits of Model::forward with a KVCache (fp32, <= 1e-5 relative) for LLaMA,
// Qwen2 (q/k/v bias), Mistral (sliding window) and Gemma 3 (sliding layers, window shorter than the sequence), dense,
// fused and packed, also with left-padded rows and attention spans shorter than the capacity; greedy generation
// through it equals eager generation; a full cache is a clear error. On a GPU also: graph replay against eager decode,
// the fused layer kernels against their references, launches with programmatic dependent launch against plain, and
// the decode-attention kernel against the SDPA path.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/decode_graph.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/packed_linear.h"
#include "ops/hybrid_linear.h"
#include "ops/layer_ops.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace patchllm;

namespace {

struct Case {
  const char* name;
  int family;  // 0 LLaMA, 1 Qwen2 bias, 2 Mistral window 3, 3 Gemma 3 tiny (window 4)
  bool fuse, packed;
};

std::string model_dir(const Case& c) {
  if (c.family == 3) return test::source_dir() + "/tests/data/gemma3-tiny";
  test::TinySpec s;
  if (c.family == 1) s = test::TinySpec{"Qwen2ForCausalLM", 64, 96, 2, 4, 2, 97, 128, true, true};
  if (c.family == 2) {
    s.arch = "MistralForCausalLM";
    s.sliding_window = 3;
  }
  return test::tiny_model_write(test::temp_dir(std::string("decode_graph_") + c.name), s);
}

std::unique_ptr<Model> load(const Case& c, const std::string& dir) {
  auto m = Model::load(dir);
  if (c.packed) model_pack_random(*m, 0.5, 9, torch::kBFloat16, 16, 64);
  if (c.fuse) model_fuse_projections(*m);
  return m;
}

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

class DecodeGraphFamilies : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(DecodeGraphFamilies, StaticStepsEqualEagerCacheDecode) {
  const Case& c = GetParam();
  const std::string dir = model_dir(c);
  auto m = load(c, dir);
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  const int64_t B = 2, P = 5, T = 14, cap = 16;
  auto ids = torch::randint(3, m->config.vocab_size, {B, T}, torch::kInt64);
  // Eager: prefill P tokens, then one token at a time through Model::forward with the cache.
  auto cache = m->make_cache(B, cap);
  auto eager_prefill = m->forward(ids.slice(1, 0, P), &cache);
  std::vector<torch::Tensor> eager;
  for (int64_t t = P; t < T; ++t) eager.push_back(m->forward(ids.slice(1, t, t + 1), &cache).select(1, 0));

  DecodeGraph g(*m, B, cap);
  EXPECT_LE(rel_diff(g.prefill(ids.slice(1, 0, P)), eager_prefill.select(1, -1)), 1e-6);  // last position only
  EXPECT_EQ(g.cache().length, P);
  for (int64_t t = P; t < T; ++t) {
    auto got = g.step(ids.slice(1, t, t + 1));
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{B, m->config.vocab_size}));
    EXPECT_LE(rel_diff(got, eager[t - P]), 1e-5) << "position " << t;
  }
  EXPECT_EQ(g.cache().length, T);
  EXPECT_FALSE(g.graph_captured());  // CPU: the same step, eagerly
  EXPECT_TRUE(g.fallback_reason().empty());
  // The cache holds the same K/V as the eager one.
  for (size_t i = 0; i < cache.k.size(); ++i) {
    EXPECT_LE(rel_diff(g.cache().k[i].narrow(2, 0, T), cache.k[i].narrow(2, 0, T)), 1e-5);
    EXPECT_LE(rel_diff(g.cache().v[i].narrow(2, 0, T), cache.v[i].narrow(2, 0, T)), 1e-5);
  }
  // [B] ids work as well as [B, 1]; a wrong count and a full cache are errors.
  EXPECT_NO_THROW(g.step(ids.select(1, 0)));
  EXPECT_THROW(g.step(ids.slice(0, 0, 1).slice(1, 0, 1)), InvalidArgument);
  EXPECT_NO_THROW(g.step(ids.select(1, 1)));
  EXPECT_THROW(g.step(ids.select(1, 2)), InvalidArgument);  // 16 of 16 slots used
}

TEST_P(DecodeGraphFamilies, GreedyGenerationEqualsEager) {
  const Case& c = GetParam();
  auto m = load(c, model_dir(c));
  SamplingOptions so;
  so.max_new_tokens = 10;
  std::vector<int> prompt = {1, 5, 7, 11};
  auto eager = generate(*m, prompt, so);
  so.decode_graph = true;
  GenerateStats st;
  auto graph = generate(*m, prompt, so, {}, &st);
  EXPECT_EQ(graph, eager);
  EXPECT_EQ(st.generated_tokens, 10);
}

// Left-padded rows (batched generation) and attention spans shorter than the capacity: the static steps give the
// logits of Model::forward with the attention mask and a KVCache, span by span (min_span 4: spans 8 then 16 here).
TEST_P(DecodeGraphFamilies, LeftPaddedRowsAndSpansEqualEagerMaskedDecode) {
  const Case& c = GetParam();
  auto m = load(c, model_dir(c));
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  const int64_t B = 3, P = 6, T = 14, cap = 16;
  const std::vector<int64_t> pads = {0, 2, 4};
  auto ids = torch::randint(3, m->config.vocab_size, {B, T}, torch::kInt64);
  auto mask = torch::ones({B, cap}, torch::kInt64);
  for (int64_t b = 0; b < B; ++b) mask[b].narrow(0, 0, pads[size_t(b)]).zero_();
  auto cache = m->make_cache(B, cap);
  auto eager_prefill = m->forward(ids.slice(1, 0, P), &cache, mask.slice(1, 0, P));
  std::vector<torch::Tensor> eager;
  for (int64_t t = P; t < T; ++t)
    eager.push_back(m->forward(ids.slice(1, t, t + 1), &cache, mask.slice(1, 0, t + 1)).select(1, 0));

  DecodeGraphOptions go;
  go.left_pad = pads;
  go.min_span = 4;
  DecodeGraph g(*m, B, cap, go);
  EXPECT_THROW(g.step(ids.select(1, 0)), InvalidArgument);  // slot 0 is padding in rows 1 and 2: prefill first
  EXPECT_LE(rel_diff(g.prefill(ids.slice(1, 0, P)), eager_prefill.select(1, -1)), 1e-6);  // last position only
  std::vector<int64_t> spans;
  for (int64_t t = P; t < T; ++t) {
    spans.push_back(g.span());
    EXPECT_LE(rel_diff(g.step(ids.slice(1, t, t + 1)), eager[size_t(t - P)]), 1e-5) << "position " << t;
  }
  EXPECT_EQ(spans, (std::vector<int64_t>{8, 8, 16, 16, 16, 16, 16, 16}));
  EXPECT_EQ(g.graphs_captured(), 0);  // CPU: eager steps

  // Bad options are one clear error each.
  go.left_pad = {0, 1};
  EXPECT_THROW(DecodeGraph(*m, B, cap, go), InvalidArgument);
  go.left_pad = {0, 1, cap};
  EXPECT_THROW(DecodeGraph(*m, B, cap, go), InvalidArgument);
  go.left_pad = {};
  go.min_span = -1;
  EXPECT_THROW(DecodeGraph(*m, B, cap, go), InvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Families, DecodeGraphFamilies,
                         ::testing::Values(Case{"llama", 0, false, false}, Case{"llama_fused", 0, true, false},
                                           Case{"llama_packed_fused", 0, true, true},
                                           Case{"qwen2_bias", 1, false, false},
                                           Case{"qwen2_bias_packed_fused", 1, true, true},
                                           Case{"mistral_window", 2, false, false}, Case{"gemma3", 3, false, false},
                                           Case{"gemma3_fused", 3, true, false}),
                         [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

// On a GPU: the step is captured as a CUDA graph and replayed; replayed logits equal eager cache decode on the same
// device (fp32 dense, fused; bf16 packed through the hybrid kernels with their 128x128 tiles, ragged here). Then with
// a left-padded row and two attention spans (min_span 8: spans 8 and 16), each captured as its own graph, against
// eager decode with the attention mask.
TEST(DecodeGraphCuda, ReplayEqualsEagerOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only LibTorch): graph capture not run";
  for (const Case& c : {Case{"llama_fused", 0, true, false}, Case{"qwen2_bias_packed_fused", 1, true, true},
                        Case{"gemma3", 3, false, false}})
    for (bool padded : {false, true}) {
      SCOPED_TRACE(std::string(c.name) + (padded ? " padded, spans" : ""));
      ModelLoadOptions o;
      o.device = torch::Device(torch::kCUDA, 0);
      o.dtype = c.packed ? torch::kBFloat16 : torch::kFloat32;
      auto m = Model::load(model_dir(c), o);
      if (c.packed) model_pack_random(*m, 0.5, 9, torch::kBFloat16);
      if (c.fuse) model_fuse_projections(*m);
      torch::NoGradGuard ng;
      torch::manual_seed(4);
      const int64_t B = 2, P = 5, T = 14, cap = 16;
      auto ids = torch::randint(3, m->config.vocab_size, {B, T}, torch::kInt64).to(o.device);
      auto mask = torch::ones({B, cap}, torch::kInt64);
      DecodeGraphOptions go;
      if (padded) {
        mask[1].narrow(0, 0, 3).zero_();
        go.left_pad = {0, 3};
        go.min_span = 8;
      }
      mask = mask.to(o.device);
      auto upto = [&](int64_t n) { return padded ? mask.slice(1, 0, n) : torch::Tensor(); };  // no mask: plain path
      auto cache = m->make_cache(B, cap);
      m->forward(ids.slice(1, 0, P), &cache, upto(P));
      DecodeGraph g(*m, B, cap, go);
      g.prefill(ids.slice(1, 0, P));
      for (int64_t t = P; t < T; ++t) {
        auto want = m->forward(ids.slice(1, t, t + 1), &cache, upto(t + 1)).select(1, 0);
        auto got = g.step(ids.slice(1, t, t + 1)).clone();
        EXPECT_LE(rel_diff(got, want), c.packed ? 2e-2 : 1e-5) << "position " << t;
      }
      EXPECT_TRUE(g.graph_captured()) << g.fallback_reason();
      EXPECT_EQ(g.graphs_captured(), padded ? 2 : 1);
    }
}

// On a GPU: the fused layer kernels (ops/layer_ops.h) inside the model give the references' logits (fp32 ≤ 1e-5
// relative; bf16 within its precision) for every family: prefill with a left-padded batch (per-row RoPE angles and
// a mask), then cached decode steps, and the CUDA-graph replay with the fused kernels captured.
TEST(DecodeGraphCuda, FusedLayerOpsGiveTheReferenceLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only LibTorch): kernels not run";
  const bool saved = fused_layer_ops();
  for (const Case& c : {Case{"llama_fused", 0, true, false}, Case{"qwen2_bias", 1, false, false},
                        Case{"mistral_window", 2, false, false}, Case{"gemma3", 3, false, false}}) {
    for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
      SCOPED_TRACE(std::string(c.name) + " " + c10::toString(dt));
      ModelLoadOptions o;
      o.device = torch::Device(torch::kCUDA, 0);
      o.dtype = dt;
      auto m = Model::load(model_dir(c), o);
      if (c.fuse) model_fuse_projections(*m);
      torch::NoGradGuard ng;
      torch::manual_seed(5);
      const int64_t B = 2, P = 6, T = 10;
      auto ids = torch::randint(3, m->config.vocab_size, {B, T}, torch::kInt64).to(o.device);
      auto mask = torch::ones({B, T}, torch::kInt64);
      mask[0].narrow(0, 0, 2).zero_();  // row 0 left-padded by two
      mask = mask.to(o.device);
      auto run = [&](bool fused) {
        set_fused_layer_ops(fused);
        auto cache = m->make_cache(B, T);
        std::vector<torch::Tensor> out = {m->forward(ids.slice(1, 0, P), &cache, mask.slice(1, 0, P))};
        for (int64_t t = P; t < T; ++t)
          out.push_back(m->forward(ids.slice(1, t, t + 1), &cache, mask.slice(1, 0, t + 1)));
        return torch::cat(out, 1);
      };
      auto want = run(false), got = run(true);
      set_fused_layer_ops(saved);
      EXPECT_LE(rel_diff(got, want), dt == torch::kFloat32 ? 1e-5 : 3e-2);
      // Graph replay with the fused kernels against the reference's eager steps (no padding here).
      set_fused_layer_ops(false);
      auto cache = m->make_cache(B, T);
      m->forward(ids.slice(1, 0, P), &cache);
      std::vector<torch::Tensor> ref;
      for (int64_t t = P; t < T; ++t) ref.push_back(m->forward(ids.slice(1, t, t + 1), &cache).select(1, 0));
      set_fused_layer_ops(true);
      DecodeGraph g(*m, B, T);
      g.prefill(ids.slice(1, 0, P));
      for (int64_t t = P; t < T; ++t)
        EXPECT_LE(rel_diff(g.step(ids.slice(1, t, t + 1)).clone(), ref[size_t(t - P)]),
                  dt == torch::kFloat32 ? 1e-5 : 3e-2)
            << "position " << t;
      EXPECT_TRUE(g.graph_captured()) << g.fallback_reason();
      set_fused_layer_ops(saved);
    }
  }
}

// On a GPU: programmatic dependent launch through the decode step (HybridKernelOptions::pdl: the hybrid decode kernels
// and the fused layer kernels may start during the kernel before them) changes timing only. A bf16 packed, fused
// LLaMA's prefill, eager decode steps and CUDA-graph replays give the plain launches' logits bit for bit.
TEST(DecodeGraphCuda, PdlStepsEqualPlainLaunches) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only LibTorch): kernels not run";
  const HybridKernelOptions saved = hybrid_kernel_options();
  const bool saved_fused = fused_layer_ops();
  set_fused_layer_ops(true);
  const Case c{"llama_packed_fused", 0, true, true};
  ModelLoadOptions o;
  o.device = torch::Device(torch::kCUDA, 0);
  o.dtype = torch::kBFloat16;
  auto m = Model::load(model_dir(c), o);
  model_pack_random(*m, 0.5, 9, torch::kBFloat16);
  model_fuse_projections(*m);
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  const int64_t B = 3, P = 5, T = 12;
  auto ids = torch::randint(3, m->config.vocab_size, {B, T}, torch::kInt64).to(o.device);
  auto run = [&](bool pdl) {
    HybridKernelOptions ko = saved;
    ko.pdl = pdl;
    set_hybrid_kernel_options(ko);
    auto cache = m->make_cache(B, T);
    std::vector<torch::Tensor> out = {m->forward(ids.slice(1, 0, P), &cache)};
    for (int64_t t = P; t < T; ++t) out.push_back(m->forward(ids.slice(1, t, t + 1), &cache));
    DecodeGraph g(*m, B, T);
    g.prefill(ids.slice(1, 0, P));
    for (int64_t t = P; t < T; ++t) out.push_back(g.step(ids.slice(1, t, t + 1)).clone().unsqueeze(1));
    EXPECT_TRUE(g.graph_captured()) << g.fallback_reason();
    return torch::cat(out, 1);
  };
  auto want = run(false), got = run(true);
  set_hybrid_kernel_options(saved);
  set_fused_layer_ops(saved_fused);
  EXPECT_TRUE(got.equal(want)) << "max |diff| " << (got - want).abs().max().item<double>();
}

// On a GPU: the decode-attention kernel in the static step (head_dim 64 here, so the kernel takes it) gives the
// logits of the SDPA path it replaces, within the dtype's precision, for LLaMA (4 kv heads), Qwen2 (one kv head for
// four query heads, biases) and Mistral (window 3), bf16 and fp16, with a left-padded row and two attention spans,
// through CUDA-graph replays.
TEST(DecodeGraphCuda, DecodeAttentionKernelGivesTheSdpaLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only LibTorch): kernels not run";
  const bool saved = fused_decode_attention(), saved_ops = fused_layer_ops();
  set_fused_layer_ops(true);
  for (int family : {0, 1, 2})
    for (auto dt : {torch::kBFloat16, torch::kHalf}) {
      test::TinySpec s;
      s.hidden = 256, s.inter = 128, s.heads = 4, s.kv_heads = family == 0 ? 4 : family == 1 ? 1 : 2;
      if (family == 1) s.arch = "Qwen2ForCausalLM", s.tied = s.bias = true;
      if (family == 2) s.arch = "MistralForCausalLM", s.sliding_window = 3;
      SCOPED_TRACE(s.arch + " " + c10::toString(dt));
      ModelLoadOptions o;
      o.device = torch::Device(torch::kCUDA, 0);
      o.dtype = dt;
      auto m = Model::load(test::tiny_model_write(test::temp_dir("decode_attn_" + s.arch), s), o);
      model_fuse_projections(*m);
      torch::NoGradGuard ng;
      torch::manual_seed(7);
      const int64_t B = 2, P = 5, T = 14, cap = 16;
      ASSERT_TRUE(decode_attention_fusable(torch::empty({B, 1, s.heads, 64}, torch::TensorOptions(o.device).dtype(dt)),
                                           m->make_cache(B, cap).k[0]));
      auto ids = torch::randint(3, m->config.vocab_size, {B, T}, torch::kInt64).to(o.device);
      DecodeGraphOptions go;
      go.left_pad = {0, 3};
      go.min_span = 8;
      auto run = [&](bool kernel) {
        set_fused_decode_attention(kernel);
        DecodeGraph g(*m, B, cap, go);
        g.prefill(ids.slice(1, 0, P));
        std::vector<torch::Tensor> out;
        for (int64_t t = P; t < T; ++t) out.push_back(g.step(ids.slice(1, t, t + 1)).clone());
        EXPECT_TRUE(g.graph_captured()) << g.fallback_reason();
        return torch::stack(out);
      };
      auto want = run(false), got = run(true);
      EXPECT_LE(rel_diff(got, want), 3e-2);
    }
  set_fused_decode_attention(saved);
  set_fused_layer_ops(saved_ops);
}
