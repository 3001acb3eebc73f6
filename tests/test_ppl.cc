// eval ppl: the LM head and log-softmax in row chunks give the NLL of the full logits (Model::forward), for any
// chunk size and batch; the token-id digest is sha256 of int32 little-endian ids; the CLI reports both.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "eval/ppl.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_model.h"
#include "tokenizer/tokenizer.h"

using namespace patchllm;

namespace {

// Mean NLL of the first n_windows windows from the full [B, ctx, V] logits of Model::forward, one window at a time.
double reference_nll_mean(Model& m, const std::vector<int>& ids, int64_t ctx, int64_t n_windows, int64_t* n_scored) {
  torch::NoGradGuard ng;
  double sum = 0;
  *n_scored = 0;
  for (int64_t w = 0; w < n_windows; ++w) {
    auto x = torch::tensor(std::vector<int64_t>(ids.begin() + w * ctx, ids.begin() + (w + 1) * ctx)).view({1, ctx});
    auto logits = m.forward(x).to(torch::kFloat64)[0];  // [ctx, V]
    auto logp = torch::log_softmax(logits, -1);
    for (int64_t t = 0; t + 1 < ctx; ++t) {
      sum -= logp[t][ids[w * ctx + t + 1]].item<double>();
      ++*n_scored;
    }
  }
  return sum / static_cast<double>(*n_scored);
}

std::vector<int> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  auto t = torch::randint(vocab, {n}, torch::kLong);
  std::vector<int> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int>(t[i].item<int64_t>());
  return ids;
}

}  // namespace

TEST(Ppl, TokenIdsSha256IsInt32LittleEndian) {
  // Expected digests from Python: hashlib.sha256(numpy.asarray(ids, dtype="<i4").tobytes()).hexdigest(),
  // as tools/ppl_transformers.py computes its ids_sha256_int32le.
  EXPECT_EQ(token_ids_sha256({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(token_ids_sha256({1, 2, 3}), "4636993d3e1da4e9d6b8f87b79e8f7c6d018580d52661950eabc3845c5897a4d");
  EXPECT_EQ(token_ids_sha256({0, 258, 70000, 262143, -1}),
            "89451e9fdde67eb81431f1350c2e00e7a68fe9b23b181dea605318f6c5949049");
}

// token_nll against an fp64 log-softmax of the same fp32 logits, at vocabulary sizes where an fp32 log-softmax is
// off by 1e-6 to 6e-5 (LLaMA-2 32k, Qwen2.5 152k, Gemma 3 262k), with logits of growing spread.
TEST(Ppl, TokenNllMatchesFp64LogSoftmax) {
  torch::manual_seed(5);
  for (int64_t V : {32000, 151936, 262144})
    for (double spread : {1.0, 3.0, 10.0}) {
      auto x = torch::randn({70, V}) * spread;  // 70 rows: two 64-row blocks, the second ragged
      auto t = torch::randint(0, V, {70, 1});
      auto want = -x.to(torch::kFloat64).log_softmax(-1).gather(-1, t).squeeze(-1);
      auto got = token_nll(x, t);
      ASSERT_EQ(got.scalar_type(), torch::kFloat64);
      EXPECT_LE((got - want).abs().max().item<double>(), 1e-7) << "V " << V << " spread " << spread;
    }
  EXPECT_THROW(token_nll(torch::zeros({3, 5}), torch::zeros({4, 1}, torch::kLong)), std::exception);
}

TEST(Ppl, ChunkedHeadEqualsFullLogits) {
  for (bool qwen : {false, true}) {
    const test::TinySpec spec = qwen ? test::tiny_qwen2_spec(3) : test::TinySpec{};
    std::string dir = test::tiny_model_write(test::temp_dir("ppl_chunk") + "/m", spec);
    auto model = Model::load(dir);
    const int64_t ctx = 40;
    auto ids = random_ids(3 * ctx + 7, spec.vocab, 11 + qwen);  // 3 windows, a 7-token tail that is dropped
    int64_t ref_scored = 0;
    const double ref = reference_nll_mean(*model, ids, ctx, 3, &ref_scored);
    for (int64_t batch : {1, 2}) {
      for (int64_t rows : {0, 1, 7, 39, 512}) {
        PplOptions o;
        o.ctx = ctx;
        o.batch = batch;
        o.head_rows = rows;
        auto r = ppl_evaluate(*model, ids, o);
        SCOPED_TRACE(std::string(qwen ? "qwen2" : "llama") + " batch " + std::to_string(batch) + " head_rows " +
                     std::to_string(rows));
        EXPECT_EQ(r.n_windows, 3);
        EXPECT_EQ(r.n_scored, ref_scored);
        EXPECT_EQ(r.n_tokens, static_cast<int64_t>(ids.size()));
        EXPECT_EQ(r.ids_sha256, token_ids_sha256(ids));
        EXPECT_NEAR(r.nll_mean, ref, 1e-6 * std::abs(ref)) << "reference (fp64 log-softmax of full logits) " << ref;
        EXPECT_NEAR(r.ppl, std::exp(ref), 1e-6 * std::exp(ref));
      }
    }
    PplOptions bad;
    bad.ctx = ctx;
    bad.head_rows = -1;
    EXPECT_THROW(ppl_evaluate(*model, ids, bad), std::exception);
  }
}

TEST(Ppl, CliChunkSizesAgreeAndReportTheIds) {
  PATCHLLM_REQUIRE_SHARED(text, "data/tinystories/valid.txt");
  std::string dir = test::stories260k_hf(test::shared_dir() + "/models/stories260K");
  std::string tmp = test::temp_dir("ppl_cli");
  auto tok = tokenizer_load(dir);
  const auto ids = tok->encode(file_read(text), true);  // eval ppl without --split-on tokenizes the file once
  double ppl_full = 0;
  for (int rows : {0, 100, 512}) {
    std::string json = tmp + "/r" + std::to_string(rows) + ".json";
    auto r = test::run_cli("eval ppl -m '" + dir + "' -f '" + text + "' -c 256 --chunks 3 -b 2 --head-rows " +
                           std::to_string(rows) + " --json '" + json + "'");
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(file_read(json));
    EXPECT_EQ(j["n_tokens"].get<int64_t>(), static_cast<int64_t>(ids.size()));
    EXPECT_EQ(j["ids_sha256_int32le"].get<std::string>(), token_ids_sha256(ids));
    EXPECT_EQ(j["head_rows"].get<int64_t>(), rows);
    EXPECT_EQ(j["n_scored"].get<int64_t>(), 3 * 255);
    const double p = j["ppl"].get<double>();
    if (rows == 0) ppl_full = p;
    else EXPECT_NEAR(p, ppl_full, 1e-6 * ppl_full) << "head_rows " << rows;
  }
  auto r = test::run_cli("eval ppl -m '" + dir + "' -f '" + text + "' --head-rows -3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error: --head-rows must be >= 0"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}
