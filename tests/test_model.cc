// Model building blocks against plain loop references; KV cache == full recompute; padded batch == single rows.
#include <gtest/gtest.h>

#include <torch/version.h>

#include <cmath>
#include <numeric>

#include "core/error.h"
#include "model/generate.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace patchllm;

TEST(Model, RmsNormMatchesFormula) {
  torch::manual_seed(1);
  auto x = torch::randn({3, 16}), w = torch::randn({16});
  auto y = rms_norm(x, w, 1e-5);
  for (int r = 0; r < 3; ++r) {
    double ss = 0;
    for (int i = 0; i < 16; ++i) ss += std::pow(x[r][i].item<double>(), 2);
    double inv = 1.0 / std::sqrt(ss / 16 + 1e-5);
    for (int i = 0; i < 16; ++i)
      EXPECT_NEAR(y[r][i].item<double>(), w[i].item<double>() * x[r][i].item<double>() * inv, 1e-5);
  }
}

TEST(Model, RopeRotatesHalfPairsByPositionAngle) {
  ModelConfig c;
  c.head_dim = 8;
  c.rope_theta = 10000;
  c.max_position = 64;
  auto inv = rope_inv_freq(c);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(inv[i].item<double>(), std::pow(10000.0, -2.0 * i / 8), 1e-7);
  torch::manual_seed(2);
  auto x = torch::randn({1, 2, 5, 8});  // [B, H, T, D]
  auto pos = torch::arange(3, 8, torch::kFloat32).view({1, 5, 1});
  auto freqs = pos * inv.view({1, 1, 4});
  auto emb = torch::cat({freqs, freqs}, -1);
  auto y = rope_apply(x, emb.cos(), emb.sin());
  for (int h = 0; h < 2; ++h)
    for (int t = 0; t < 5; ++t)
      for (int i = 0; i < 4; ++i) {
        double a = (t + 3) * std::pow(10000.0, -2.0 * i / 8);
        double x1 = x[0][h][t][i].item<double>(), x2 = x[0][h][t][i + 4].item<double>();
        EXPECT_NEAR(y[0][h][t][i].item<double>(), x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
        EXPECT_NEAR(y[0][h][t][i + 4].item<double>(), x2 * std::cos(a) + x1 * std::sin(a), 1e-5);
      }
}

TEST(Model, Llama3RopeScalingMatchesHandComputed) {
  ModelConfig c;
  c.head_dim = 64;
  c.rope_theta = 500000;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position = 8192;
  auto inv = rope_inv_freq(c);
  for (int i = 0; i < 32; ++i) {
    double f = std::pow(500000.0, -2.0 * i / 64), wl = 2 * M_PI / f, expect;
    if (wl < 8192.0 / 4)
      expect = f;
    else if (wl > 8192.0 / 1)
      expect = f / 8;
    else {
      double s = (8192.0 / wl - 1) / (4 - 1);
      expect = (1 - s) * f / 8 + s * f;
    }
    EXPECT_NEAR(inv[i].item<double>(), expect, 1e-6 * std::abs(expect) + 1e-12) << i;
  }
}

TEST(Model, GroupedQueryAttentionMatchesLoops) {
  torch::manual_seed(3);
  const int B = 2, H = 4, Hkv = 2, T = 5, D = 8;
  auto q = torch::randn({B, H, T, D}), k = torch::randn({B, Hkv, T, D}), v = torch::randn({B, Hkv, T, D});
  auto y = attention(q, k, v, {}, /*causal=*/true);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        int g = h / (H / Hkv);
        std::vector<double> s(t + 1);
        double mx = -1e30, den = 0;
        for (int j = 0; j <= t; ++j) {
          s[j] = (q[b][h][t] * k[b][g][j]).sum().item<double>() / std::sqrt(double(D));
          mx = std::max(mx, s[j]);
        }
        for (int j = 0; j <= t; ++j) den += (s[j] = std::exp(s[j] - mx));
        for (int d = 0; d < D; ++d) {
          double o = 0;
          for (int j = 0; j <= t; ++j) o += s[j] / den * v[b][g][j][d].item<double>();
          EXPECT_NEAR(y[b][h][t][d].item<double>(), o, 1e-5);
        }
      }
}

// One new token per sequence over a longer cache, the decode step's shape: attention() folds each kv head's query
// heads into query rows (no k/v copy). Checked against float64 loops, with a padding mask and without one, on the CPU
// in fp32 and, where CUDA runs, in bf16 through SDPA.
TEST(Model, GroupedQueryDecodeStepMatchesLoops) {
  torch::manual_seed(4);
  const int B = 2, H = 6, Hkv = 2, S = 9, D = 16;
  auto q = torch::randn({B, H, 1, D}, torch::kFloat64), k = torch::randn({B, Hkv, S, D}, torch::kFloat64),
       v = torch::randn({B, Hkv, S, D}, torch::kFloat64);
  auto bias = torch::zeros({B, 1, 1, S}, torch::kFloat64);
  bias[0][0][0][2] = -INFINITY;  // a padded slot in sequence 0, the last two slots unfilled in sequence 1
  bias[1][0][0][S - 1] = bias[1][0][0][S - 2] = -INFINITY;
  auto reference = [&](bool masked) {
    auto y = torch::zeros({B, H, 1, D}, torch::kFloat64);
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h) {
        const int g = h / (H / Hkv);
        auto s = (k[b][g] * q[b][h][0]).sum(-1) / std::sqrt(double(D));  // [S]
        if (masked) s = s + bias[b][0][0];
        y[b][h][0] = torch::matmul(torch::softmax(s, 0), v[b][g]);
      }
    return y;
  };
  std::vector<std::pair<torch::Device, torch::Dtype>> runs = {{torch::kCPU, torch::kFloat32}};
  if (torch::cuda::is_available()) runs.push_back({torch::kCUDA, torch::kBFloat16});
  for (auto [dev, dt] : runs)
    for (bool masked : {false, true}) {
      auto to = [&](const torch::Tensor& t) { return t.to(dev, dt); };
      auto y = attention(to(q), to(k), to(v), masked ? to(bias) : torch::Tensor(), /*causal=*/false);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{B, H, 1, D}));
      const double tol = dt == torch::kBFloat16 ? 2e-2 : 1e-5;
      EXPECT_LT((y.to(torch::kCPU, torch::kFloat64) - reference(masked)).abs().max().item<double>(), tol)
          << dev << " masked " << masked;
    }
}

class ModelFamilies : public ::testing::TestWithParam<test::TinySpec> {};

TEST_P(ModelFamilies, KvCacheDecodeEqualsFullRecompute) {
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), GetParam());
  auto m = Model::load(dir);
  torch::NoGradGuard ng;
  auto tokens = torch::randint(0, GetParam().vocab, {1, 12}, torch::kLong);
  auto full = m->forward(tokens);
  auto cache = m->make_cache(1, 12);
  auto first = m->forward(tokens.narrow(1, 0, 5), &cache);  // prefill 5, then one token at a time
  EXPECT_TRUE(torch::allclose(first, full.narrow(1, 0, 5), 1e-4, 1e-4));
  for (int t = 5; t < 12; ++t) {
    auto step = m->forward(tokens.narrow(1, t, 1), &cache);
    EXPECT_TRUE(torch::allclose(step[0][0], full[0][t], 1e-4, 1e-4)) << "position " << t;
  }
  EXPECT_EQ(cache.length, 12);
}

TEST_P(ModelFamilies, LeftPaddedBatchEqualsSingleRows) {
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), GetParam());
  auto m = Model::load(dir);
  torch::NoGradGuard ng;
  auto a = torch::randint(0, GetParam().vocab, {1, 9}, torch::kLong);
  auto b = torch::randint(0, GetParam().vocab, {1, 6}, torch::kLong);
  auto batch = torch::cat({a, torch::cat({torch::zeros({1, 3}, torch::kLong), b}, 1)}, 0);
  auto mask = torch::ones({2, 9}, torch::kLong);
  mask[1].narrow(0, 0, 3).zero_();
  auto out = m->forward(batch, nullptr, mask);
  EXPECT_TRUE(torch::allclose(out[0], m->forward(a)[0], 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(out[1].narrow(0, 3, 6), m->forward(b)[0], 1e-4, 1e-4));
  EXPECT_FALSE(out.isnan().any().item<bool>());
}

TEST_P(ModelFamilies, GreedyGenerationIsDeterministicAndUsesCache) {
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), GetParam());
  auto m = Model::load(dir);
  SamplingOptions so;
  so.max_new_tokens = 8;
  std::vector<int> prompt = {1, 5, 7};
  auto g = generate(*m, prompt, so);
  ASSERT_EQ(g.size(), 8u);
  // Reference: greedy by full recompute of the growing sequence.
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  torch::NoGradGuard ng;
  for (int i = 0; i < 8; ++i) {
    auto logits = m->forward(torch::tensor(seq).view({1, -1}));
    int next = static_cast<int>(logits[0][-1].argmax().item<int64_t>());
    EXPECT_EQ(g[i], next) << "step " << i;
    seq.push_back(next);
  }
}

// Continuous batching's refill: a prompt written into one row's slots of a used cache gives the logits and K/V of a
// fresh prefill of that prompt alone, and touches no other row and none of the row's earlier slots (later slots take
// the bucket padding, which the caller overwrites). Poisoned cache, so stray reads or writes show.
TEST_P(ModelFamilies, PrefillRowEqualsAFreshPrefillInItsOwnSlots) {
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), GetParam());
  auto m = Model::load(dir);
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  const int64_t n = 7, cap = 40;
  auto ids = torch::randint(0, GetParam().vocab, {1, n}, torch::kLong);
  auto fresh = m->make_cache(1, n);
  auto want = m->forward(ids, &fresh)[0][-1];
  for (int64_t slot : {int64_t(10), cap - n}) {  // bucket 16 fits after slot 10; at cap - n it is cut to n
    SCOPED_TRACE("slot " + std::to_string(slot));
    auto cache = m->make_cache(3, cap);
    for (auto* t : {&cache.k, &cache.v})
      for (auto& x : *t) x.copy_(torch::randn_like(x) * 1e3);
    cache.length = 30;
    std::vector<torch::Tensor> before;
    for (const auto& x : cache.k) before.push_back(x.clone());
    auto got = m->prefill_row(ids, cache, 1, slot);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{1, GetParam().vocab}));
    EXPECT_TRUE(torch::allclose(got[0], want, 1e-4, 1e-4));
    EXPECT_EQ(cache.length, 30);
    const int64_t written = std::min(refill_bucket(n), cap - slot);
    for (size_t i = 0; i < cache.k.size(); ++i) {
      EXPECT_TRUE(torch::allclose(cache.k[i][1].narrow(1, slot, n), fresh.k[i][0], 1e-5, 1e-5)) << "layer " << i;
      EXPECT_TRUE(torch::allclose(cache.v[i][1].narrow(1, slot, n), fresh.v[i][0], 1e-5, 1e-5)) << "layer " << i;
      for (int64_t r : {0, 2}) EXPECT_TRUE(cache.k[i][r].equal(before[i][r])) << "row " << r << " layer " << i;
      EXPECT_TRUE(cache.k[i][1].narrow(1, 0, slot).equal(before[i][1].narrow(1, 0, slot)));
      const int64_t end = slot + written;
      EXPECT_TRUE(cache.k[i][1].narrow(1, end, cap - end).equal(before[i][1].narrow(1, end, cap - end)));
    }
  }
  auto cache = m->make_cache(2, cap);
  EXPECT_THROW(m->prefill_row(ids, cache, 0, cap - n + 1), InvalidArgument);  // past the capacity
  EXPECT_THROW(m->prefill_row(ids, cache, 2, 0), InvalidArgument);            // no such row
  EXPECT_THROW(m->prefill_row(ids.view({-1}), cache, 0, 0), InvalidArgument);
}

TEST(Model, RefillBucketRoundsUpToAQuarterOctave) {
  // Hand values: multiples of max(16, a quarter of the power of two at or below n).
  const std::vector<std::pair<int64_t, int64_t>> cases = {{1, 16},  {16, 16},   {17, 32},   {33, 48},   {64, 64},
                                                          {65, 80}, {150, 160}, {300, 320}, {513, 640}, {1000, 1024}};
  for (auto [n, want] : cases) EXPECT_EQ(refill_bucket(n), want) << "n " << n;
  for (int64_t n = 1; n < 5000; ++n) {
    const int64_t b = refill_bucket(n);
    ASSERT_TRUE(b >= n && (b - n < 16 || (b - n) * 4 < n)) << "n " << n << " bucket " << b;  // < max(16, n / 4)
  }
}

// Generation keeps cuDNN attention out of SDPA while it runs (cuDNN's per-shape plans) and gives the setting back,
// also when guards nest; on the CPU the guard does nothing.
TEST(Model, SdpaCudnnOffRestoresTheSetting) {
  EXPECT_FALSE(SdpaCudnnOff(torch::kCPU).active());
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA device";
  auto& ctx = at::globalContext();
  const bool before = ctx.userEnabledCuDNNSDP();
  ctx.setSDPUseCuDNN(true);
  {
    SdpaCudnnOff outer(torch::kCUDA);
    EXPECT_TRUE(outer.active());
    EXPECT_FALSE(ctx.userEnabledCuDNNSDP());
    {
      SdpaCudnnOff inner(torch::kCUDA);
      EXPECT_FALSE(inner.active());  // already off: the outer guard restores it
    }
    EXPECT_FALSE(ctx.userEnabledCuDNNSDP());
  }
  EXPECT_TRUE(ctx.userEnabledCuDNNSDP());
  ctx.setSDPUseCuDNN(before);
#else
  GTEST_SKIP() << "LibTorch before 2.5 has no SDPA backend switch";
#endif
}

// Batched generation (left padding + attention mask): every row is what generate() gives for its prompt alone, greedy
// and sampled with the same seed, with and without a stop id that ends one row early. A sliding window counts the
// padding slots (HF's semantics), so with a window only the unpadded row is compared.
TEST_P(ModelFamilies, BatchedGenerationEqualsOnePromptAtATime) {
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), GetParam());
  auto m = Model::load(dir);
  const std::vector<std::vector<int>> prompts = {{1, 5, 7}, {2, 9, 4, 11, 3, 8}, {6}};
  for (double temp : {0.0, 0.8}) {
    SamplingOptions so;
    so.max_new_tokens = 7;
    so.temperature = temp;
    so.seed = 11;
    // Sampled rows also with top-k and the repetition penalty: each row's penalty sees its own prompt and output.
    if (temp > 0) so.top_k = 20, so.repetition_penalty = 1.3;
    const auto first = generate(*m, prompts[0], so);
    ASSERT_EQ(first.size(), 7u);
    // A stop id that row 0 first emits at step k >= 1 (so it ends after k + 1 tokens); the others may stop on it too.
    size_t k = 1;
    while (k < first.size() && std::find(first.begin(), first.begin() + k, first[k]) != first.begin() + k) ++k;
    // Eager batches (Model::forward with the mask) and static steps (DecodeGraph with the rows' left padding; on the
    // CPU the same step a CUDA graph captures, run eagerly), against eager single-prompt generation; all prompts as
    // rows, or 2 rows with continuous batching (prompt 2 goes into the first row that finishes, prefilled into that
    // row's slots before the current one).
    for (bool stop : {false, true})
      for (bool graph : {false, true})
        for (int64_t rows : {0, 2}) {
          SCOPED_TRACE(std::string("temp ") + std::to_string(temp) + (stop ? " stop" : "") + (graph ? " graph" : "") +
                       " rows " + std::to_string(rows));
          if (stop) so.stop_ids = {first[std::min(k, first.size() - 1)]};
          SamplingOptions bo = so;
          bo.decode_graph = graph;
          GenerateStats st;
          const auto batch = generate_batch(*m, prompts, bo, &st, {}, rows);
          ASSERT_EQ(batch.size(), prompts.size());
          int64_t sum = 0;
          for (size_t b = 0; b < prompts.size(); ++b) {
            sum += static_cast<int64_t>(batch[b].size());
            if (GetParam().sliding_window > 0 && prompts[b].size() != 6) continue;
            EXPECT_EQ(batch[b], generate(*m, prompts[b], so)) << "row " << b;
          }
          if (stop && k < first.size()) EXPECT_EQ(batch[0].size(), k + 1);
          EXPECT_EQ(st.generated_tokens, sum);
          EXPECT_EQ(st.prompt_tokens, 10);
          // With 2 rows the third prompt (1 token) is one refill, prefilled at its bucket (16) or less where the
          // cache ends first.
          ASSERT_EQ(st.refills.size(), rows == 2 ? 1u : 0u);
          if (rows == 2) {
            EXPECT_EQ(st.refills[0].tokens, 1);
            EXPECT_TRUE(st.refills[0].bucket >= 1 && st.refills[0].bucket <= 16) << st.refills[0].bucket;
            EXPECT_GT(st.refills[0].seconds, 0);
            EXPECT_LE(st.refills[0].seconds, st.prompt_seconds);
          }
        }
  }
}

// The sampler ranks only as many ids as a draw needs (and first only the likeliest); it must draw what ranking the
// whole vocabulary gives: a reference with a full sort and the same generator, over flat, peaked and tied logits
// (ties: logits rounded to a few values), with and without top-k, top-p and the penalty, greedy included.
TEST(Sampler, DrawsWhatAFullSortDraws) {
  auto reference = [](const SamplingOptions& o, uint64_t& state, torch::Tensor logits, const std::vector<int>& seen) {
    logits = logits.clone();
    float* l = logits.data_ptr<float>();
    const int64_t n = logits.numel();
    std::vector<bool> done(static_cast<size_t>(n), false);
    if (o.repetition_penalty != 1.0)
      for (int id : seen)
        if (!done[size_t(id)]) done[size_t(id)] = true, l[id] = l[id] > 0 ? l[id] / 1.1f : l[id] * 1.1f;
    if (o.temperature == 0) return static_cast<int>(logits.argmax().item<int64_t>());
    auto probs = torch::softmax(logits / o.temperature, -1);
    const float* p = probs.data_ptr<float>();
    std::vector<int> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    const int64_t k = o.top_k > 0 ? std::min<int64_t>(o.top_k, n) : n;
    double total = 0;
    if (k < n)
      for (int64_t i = 0; i < k; ++i) total += p[idx[size_t(i)]];
    else
      for (int64_t i = 0; i < n; ++i) total += p[i];
    double mass = 0;
    int64_t keep = 0;
    while (keep < k && (keep == 0 || mass < o.top_p * total)) mass += p[idx[size_t(keep++)]];
    if (o.top_p >= 1) mass = total;
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    double u = static_cast<double>((state * 2685821657736338717ull) >> 11) / 9007199254740992.0 * mass;
    for (int64_t i = 0; i < keep; ++i)
      if ((u -= p[idx[size_t(i)]]) <= 0) return idx[size_t(i)];
    return idx[size_t(keep - 1)];
  };
  torch::manual_seed(5);
  int64_t draws = 0;
  for (int64_t n : {7, 300, 5000})
    for (int shape = 0; shape < 4; ++shape)
      for (double temp : {0.0, 0.7, 1.3})
        for (int64_t top_k : {int64_t(0), int64_t(1), int64_t(5), int64_t(50), n + 3})
          for (double top_p : {1.0, 0.9, 0.4})
            for (double penalty : {1.0, 1.1}) {
              if (temp == 0 && (top_k > 0 || top_p < 1)) continue;  // greedy ignores them
              SamplingOptions o;
              o.temperature = temp, o.top_k = top_k, o.top_p = top_p, o.repetition_penalty = penalty, o.seed = 9;
              Sampler s(o);
              uint64_t state = o.seed * 0x9E3779B97F4A7C15ull + 1;  // the generator's documented start
              for (int rep = 0; rep < 8; ++rep) {
                auto x = torch::randn({n});
                if (shape == 1) x = x * 6;                                   // peaked: a few ids hold the mass
                if (shape == 2) x = torch::round(x * 2) / 2;                 // many exact ties
                if (shape == 3) x = -2.0 * torch::log(torch::randperm(n, torch::kFloat32) + 1);  // Zipf-like
                const std::vector<int> seen = {0, 3, 3, int(n - 1)};
                ASSERT_EQ(s.sample(x, seen), reference(o, state, x, seen))
                    << "n " << n << " shape " << shape << " temp " << temp << " top-k " << top_k << " top-p " << top_p
                    << " penalty " << penalty << " draw " << rep;
                ++draws;
              }
            }
  EXPECT_GT(draws, 2000);
  SamplingOptions o;
  o.temperature = 1.0;
  EXPECT_THROW(Sampler(o).sample(torch::tensor({0.5f, NAN, 1.0f})), InvalidArgument);  // a broken model, not an id
}

// Greedy generation with the repetition penalty against a loop that recomputes the whole sequence without a cache and
// applies the penalty with tensor ops (HF's RepetitionPenaltyLogitsProcessor: gather, where, scatter).
TEST_P(ModelFamilies, RepetitionPenaltyGreedyMatchesRecomputedReference) {
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), GetParam());
  auto m = Model::load(dir);
  torch::NoGradGuard ng;
  const std::vector<int> prompt = {1, 5, 7, 5};
  SamplingOptions so;
  so.max_new_tokens = 12;
  so.repetition_penalty = 1.8;
  const auto got = generate(*m, prompt, so);
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  std::vector<int> want;
  for (int i = 0; i < 12; ++i) {
    auto ids = torch::tensor(seq);
    auto l = m->forward(ids.view({1, -1}))[0][-1];
    auto g = l.gather(0, ids);
    l = l.scatter(0, ids, torch::where(g < 0, g * 1.8, g / 1.8));
    want.push_back(static_cast<int>(l.argmax().item<int64_t>()));
    seq.push_back(want.back());
  }
  EXPECT_EQ(got, want);
  so.repetition_penalty = 1.0;
  EXPECT_NE(generate(*m, prompt, so), want) << "the penalty changes nothing here: the test cannot fail";
}

static test::TinySpec spec(const char* arch, bool tied, bool bias, bool llama3, int64_t window = 0) {
  test::TinySpec s;
  s.arch = arch;
  s.tied = tied;
  s.bias = bias;
  s.llama3_rope = llama3;
  s.sliding_window = window;
  return s;
}

INSTANTIATE_TEST_SUITE_P(Families, ModelFamilies,
                         ::testing::Values(spec("LlamaForCausalLM", false, false, false),
                                           spec("LlamaForCausalLM", true, false, true),
                                           spec("Qwen2ForCausalLM", true, true, false),
                                           spec("MistralForCausalLM", false, false, false, 4)),
                         [](const ::testing::TestParamInfo<test::TinySpec>& i) {
                           return i.param.arch.substr(0, i.param.arch.find("For")) + std::to_string(i.index);
                         });

TEST(Model, MistralSlidingWindowLimitsAttention) {
  // With window 4, the logits at position 10 must not depend on token 0..6, but must on token 7.
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), spec("MistralForCausalLM", false, false, false, 4));
  auto m = Model::load(dir);
  torch::NoGradGuard ng;
  auto t = torch::randint(3, 90, {1, 11}, torch::kLong);
  auto base = m->forward(t)[0][10];
  auto t2 = t.clone();
  t2[0][2] = 1;
  EXPECT_TRUE(torch::allclose(m->forward(t2)[0][10], base, 1e-5, 1e-5));
}

TEST(Model, BadInputsAreClearErrors) {
  auto dir = test::tiny_model_write(test::temp_dir("tiny"), test::TinySpec{});
  auto m = Model::load(dir);
  EXPECT_THROW(m->forward(torch::tensor({1000}).view({1, 1})), InvalidArgument);
  // Wrong shape in the checkpoint names the tensor.
  auto bad = test::temp_dir("bad");
  test::TinySpec s;
  test::tiny_model_write(bad, s);
  file_write_atomic(
      bad + "/config.json",
      R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":97,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":97})");
  try {
    Model::load(bad);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("mlp.gate_proj.weight"), std::string::npos) << e.what();
  }
  // A number beyond double's range (nlohmann's out_of_range, found by fuzz/fuzz_model_config).
  file_write_atomic(bad + "/config.json", R"({"architectures":["LlamaForCausalLM"],"rope_theta":1e999})");
  try {
    Model::load(bad);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: malformed JSON"), std::string::npos) << e.what();
  }
  // Integers given as floats out of range (undefined in nlohmann's get<int64_t>()) and a non-integer EOS id.
  const std::string base =
      R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":97,"num_hidden_layers":2,)"
      R"("num_attention_heads":4,"vocab_size":97,)";
  for (const auto& [extra, want] : std::vector<std::pair<std::string, std::string>>{
           {R"("num_key_value_heads":1e30})", "'num_key_value_heads' must be an integer, not 1e+30"},
           {R"("max_position_embeddings":-1e300})", "'max_position_embeddings' must be an integer"},
           {R"("eos_token_id":[2,"x"]})", R"(eos_token_id "x" is not a token id)"}}) {
    file_write_atomic(bad + "/config.json", base + extra);
    try {
      Model::load(bad);
      ADD_FAILURE() << extra;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(bad + "/config.json: " + want), std::string::npos) << e.what();
    }
  }
  file_write_atomic(bad + "/config.json", R"({"architectures":["GPT2LMHeadModel"],"hidden_size":64})");
  try {
    Model::load(bad);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported architecture GPT2LMHeadModel"), std::string::npos);
  }
}

TEST(Config, RopeParametersOfTransformers5) {
  // transformers >= 5 moves rope_theta and the scaling into rope_parameters.
  auto c = config_from_json(nlohmann::json::parse(R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,
      "intermediate_size":96,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10,
      "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,
      "high_freq_factor":4.0,"original_max_position_embeddings":8192}})"),
                            "cfg");
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  auto q = config_from_json(nlohmann::json::parse(R"({"architectures":["Qwen2ForCausalLM"],"hidden_size":64,
      "intermediate_size":96,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,
      "rope_parameters":{"rope_type":"default","rope_theta":1000000.0}})"),
                            "cfg");
  EXPECT_EQ(q.rope_theta, 1e6);
  EXPECT_EQ(q.rope_scaling.type, "none");
  EXPECT_TRUE(q.attention_bias);
}

// Sampler against hand-computed distributions: the repetition penalty's arithmetic, top-k, top-p and the two together
// (frequencies over 20000 draws within 0.02 of the renormalised probabilities; ids outside the kept set never drawn).
TEST(Sampler, PenaltyTopKAndTopPFollowHandComputedDistributions) {
  SamplingOptions g;
  g.repetition_penalty = 2.0;
  Sampler greedy(g);
  auto t = [](std::vector<float> v) { return torch::tensor(v); };
  EXPECT_EQ(greedy.sample(t({2.0f, 1.5f, -1.0f}), {}), 0);
  EXPECT_EQ(greedy.sample(t({2.0f, 1.5f, -1.0f}), {0}), 1);        // 2.0 / 2 = 1.0 < 1.5
  EXPECT_EQ(greedy.sample(t({2.0f, 1.5f, -1.0f}), {0, 0, 1}), 0);  // 1.0 > 0.75; an id seen twice counts once
  EXPECT_EQ(greedy.sample(t({-1.0f, -0.6f}), {1}), 0);             // negative: -0.6 · 2 = -1.2 < -1.0
  g.repetition_penalty = 1.2;
  EXPECT_EQ(Sampler(g).sample(t({2.0f, 1.5f, -1.0f}), {0}), 0);  // 2.0 / 1.2 = 1.67 > 1.5

  // log-probabilities of [0.4, 0.3, 0.2, 0.1] at temperature 1.
  const auto logits = torch::log(torch::tensor({0.3f, 0.1f, 0.4f, 0.2f}));  // sorted: ids 2, 0, 3, 1
  auto freq = [&](int64_t top_k, double top_p) {
    SamplingOptions o;
    o.temperature = 1.0;
    o.top_k = top_k;
    o.top_p = top_p;
    o.seed = 3;
    Sampler s(o);
    std::vector<double> f(4, 0.0);
    const int n = 20000;
    for (int i = 0; i < n; ++i) f[static_cast<size_t>(s.sample(logits))] += 1.0 / n;
    return f;
  };
  auto near = [](const std::vector<double>& got, const std::vector<double>& want) {
    for (size_t i = 0; i < want.size(); ++i) {
      if (want[i] == 0) EXPECT_EQ(got[i], 0) << "id " << i;
      EXPECT_NEAR(got[i], want[i], 0.02) << "id " << i;
    }
  };
  near(freq(0, 1.0), {0.3, 0.1, 0.4, 0.2});
  near(freq(1, 1.0), {0, 0, 1, 0});
  near(freq(2, 1.0), {0.3 / 0.7, 0, 0.4 / 0.7, 0});
  near(freq(0, 0.65), {0.3 / 0.7, 0, 0.4 / 0.7, 0});  // 0.4 < 0.65 <= 0.7
  near(freq(0, 0.75), {0.3 / 0.9, 0, 0.4 / 0.9, 0.2 / 0.9});
  // top-k 3 keeps 0.4, 0.3, 0.2 (mass 0.9); top-p 0.75 of that is 0.675: 0.4 + 0.3 = 0.7 reaches it.
  near(freq(3, 0.75), {0.3 / 0.7, 0, 0.4 / 0.7, 0});
  near(freq(3, 0.8), {0.3 / 0.9, 0, 0.4 / 0.9, 0.2 / 0.9});  // 0.8 · 0.9 = 0.72 > 0.7
  near(freq(10, 1.0), {0.3, 0.1, 0.4, 0.2});                 // k past the vocabulary: all

  SamplingOptions bad;
  bad.top_k = -1;
  EXPECT_THROW(Sampler{bad}, InvalidArgument);
  bad.top_k = 0;
  bad.repetition_penalty = 0;
  EXPECT_THROW(Sampler{bad}, InvalidArgument);
}
