// eval tasks: a pair's log-likelihood equals an fp64 log-softmax of Model::forward's logits; batching (right padding,
// length sorting) changes nothing; lm-eval's continuation split; acc/acc_norm/lambada metrics from those
// log-likelihoods; bad task files fail with one line naming file:line.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "eval/tasks.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_model.h"
#include "tokenizer/tokenizer.h"

using namespace patchllm;

namespace {

// Independent reference: one unpadded sequence, Model::forward (full logits), fp64 log-softmax, lm-eval's input
// (context + continuation)[-(max_len + 1):][:-1].
TaskLoglik reference_loglik(Model& m, const TaskTokens& p, int64_t max_len) {
  torch::NoGradGuard ng;
  std::vector<int64_t> full(p.context.begin(), p.context.end());
  full.insert(full.end(), p.continuation.begin(), p.continuation.end());
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(full.size()), max_len + 1);
  std::vector<int64_t> in(full.end() - keep, full.end() - 1);
  const int64_t L = static_cast<int64_t>(in.size());
  auto logp = torch::log_softmax(m.forward(torch::tensor(in).view({1, L})).to(torch::kFloat64)[0], -1);  // [L, V]
  TaskLoglik r;
  r.is_greedy = true;
  const int64_t nc = static_cast<int64_t>(p.continuation.size());
  for (int64_t k = 0; k < nc; ++k) {
    auto row = logp[L - nc + k];
    r.loglik += row[p.continuation[static_cast<size_t>(k)]].item<double>();
    r.is_greedy = r.is_greedy && row.argmax().item<int64_t>() == p.continuation[static_cast<size_t>(k)];
  }
  return r;
}

std::vector<int> random_ids(int64_t n, int64_t vocab) {
  auto t = torch::randint(vocab, {n}, torch::kLong);
  std::vector<int> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<int>(t[i].item<int64_t>());
  return ids;
}

// Pairs of varied lengths (1..40 context, 1..5 continuation tokens), some continuations greedy by construction.
std::vector<TaskTokens> random_pairs(Model& m, int n, int64_t vocab) {
  torch::manual_seed(7);
  std::vector<TaskTokens> pairs;
  for (int i = 0; i < n; ++i) {
    TaskTokens p;
    p.context = random_ids(1 + (i * 13) % 40, vocab);
    p.continuation = random_ids(1 + i % 5, vocab);
    if (i % 3 == 0) {  // the model's own greedy continuation, so is_greedy is true for some pairs
      torch::NoGradGuard ng;
      std::vector<int64_t> x(p.context.begin(), p.context.end());
      for (size_t k = 0; k < p.continuation.size(); ++k) {
        auto logits = m.forward(torch::tensor(x).view({1, -1}))[0][-1];
        p.continuation[k] = static_cast<int>(logits.argmax().item<int64_t>());
        x.push_back(p.continuation[k]);
      }
    }
    pairs.push_back(p);
  }
  return pairs;
}

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  std::string p = dir + "/" + name;
  file_write_atomic(p, text);
  return p;
}

}  // namespace

TEST(Tasks, LoglikEqualsFp64LogSoftmaxOfForward) {
  for (bool qwen : {false, true}) {
    const test::TinySpec spec = qwen ? test::tiny_qwen2_spec(4) : test::TinySpec{};
    auto model = Model::load(test::tiny_model_write(test::temp_dir("tasks_ll") + "/m", spec));
    auto pairs = random_pairs(*model, 12, spec.vocab);
    for (int64_t max_len : {int64_t{0}, int64_t{20}}) {  // 20: the longer pairs lose context tokens on the left
      TaskOptions o;
      o.batch = 1;
      o.max_len = max_len;
      auto got = task_loglik(*model, pairs, o);
      ASSERT_EQ(got.size(), pairs.size());
      int greedy = 0;
      for (size_t i = 0; i < pairs.size(); ++i) {
        auto want = reference_loglik(*model, pairs[i], max_len > 0 ? max_len : spec.max_pos);
        SCOPED_TRACE(str(qwen ? "qwen2" : "llama", " max_len ", max_len, " pair ", i));
        EXPECT_NEAR(got[i].loglik, want.loglik, 1e-5 * std::max(1.0, std::abs(want.loglik)));
        EXPECT_EQ(got[i].is_greedy, want.is_greedy);
        greedy += want.is_greedy;
      }
      // Truncation (max_len 20) changes the context of the long greedy-by-construction pairs, so only untruncated.
      if (max_len == 0) EXPECT_EQ(greedy, 4) << "the greedy-by-construction pairs (i % 3 == 0) must count as greedy";
      EXPECT_LT(greedy, 12) << "random continuations are not greedy";
    }
  }
}

TEST(Tasks, BatchedEqualsOneAtATime) {
  test::TinySpec spec;
  auto model = Model::load(test::tiny_model_write(test::temp_dir("tasks_batch") + "/m", spec));
  auto pairs = random_pairs(*model, 17, spec.vocab);
  TaskOptions one;
  one.batch = 1;
  auto ref = task_loglik(*model, pairs, one);
  for (int64_t b : {2, 5, 17, 64}) {  // ragged last batch, everything in one batch, batch larger than the input
    TaskOptions o;
    o.batch = b;
    auto got = task_loglik(*model, pairs, o);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_NEAR(got[i].loglik, ref[i].loglik, 1e-5 * std::max(1.0, std::abs(ref[i].loglik)))
          << "batch " << b << " pair " << i;
      EXPECT_EQ(got[i].is_greedy, ref[i].is_greedy) << "batch " << b << " pair " << i;
    }
  }
}

// lm-eval's split on the LLaMA-2 tokenizer (BOS added, SentencePiece '▁' for spaces): the delimiter's trailing
// space goes to the continuation ("▁yes", not a lone "▁" in the context), trailing newlines too.
TEST(Tasks, ContinuationSplitMovesTrailingWhitespaceAndKeepsBos) {
  PATCHLLM_REQUIRE_SHARED(model, "models/llama2-tokenizer/tokenizer.model");
  auto tok = tokenizer_load_file(model);
  ASSERT_EQ(tok->bos_id(), 1);
  auto pieces = [&](const std::vector<int>& ids) {
    std::vector<std::string> p;
    for (int id : ids) p.push_back(tok->token_text(id));
    return p;
  };
  auto t = task_encode_pair(*tok, "Question: Is it?\nAnswer: ", "yes");
  EXPECT_EQ(t.context, tok->encode("Question: Is it?\nAnswer:", true));
  EXPECT_EQ(t.context.front(), 1) << "BOS, as HF tokenizer(text) adds for LLaMA-2";
  EXPECT_EQ(pieces(t.context).back(), ":");
  EXPECT_EQ(pieces(t.continuation), (std::vector<std::string>{"▁yes"}));
  // Without the move, the context would end in a lone "▁" and the continuation would lose its space.
  auto unmoved = tok->encode("Question: Is it?\nAnswer: ", true);
  EXPECT_EQ(pieces(unmoved).back(), "▁");

  // Newlines are whitespace too (Python rstrip): "Answer:\n" + "no" scores "\nno".
  auto n = task_encode_pair(*tok, "Answer:\n", "no");
  EXPECT_EQ(n.context, tok->encode("Answer:", true));
  auto whole = tok->encode("Answer:\nno", true);
  EXPECT_EQ(n.continuation, std::vector<int>(whole.begin() + static_cast<long>(n.context.size()), whole.end()));
  EXPECT_EQ(pieces(n.continuation).front(), "<0x0A>");
  EXPECT_THROW(task_encode_pair(*tok, "abc", ""), InvalidArgument);
}

// Metrics on hand-made task files: acc, acc_norm (loglik / characters), winogrande acc, lambada acc and ppl,
// checked against log-likelihoods computed here with the fp64 reference, through the library and the CLI.
TEST(Tasks, MetricsFromHandMadeFiles) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared);
  ASSERT_FALSE(dir.empty());
  auto tok = tokenizer_load(dir);
  auto model = Model::load(dir);
  std::string data = test::temp_dir("tasks_data");
  // Choices of very different lengths, so that acc and acc_norm can disagree; "é" counts 1 character, 2 bytes.
  write_file(
      data, "arc_easy.jsonl",
      "{\"query\": \"Question: What did Lily see?\", \"choices\": [\"a dog\", \"a big red ball in the park\", "
      "\"the sun\"], \"gold\": 1}\n"
      "{\"gold\": 0, \"choices\": [\"happy\", \"sad and very tired after the long day\"], \"query\": \"Question: "
      "How was Tom?\"}\n"
      "\n"
      "{\"query\": \"Question: Where did they go?\", \"choices\": [\"to the café\", \"home\", \"to the "
      "park\"], \"gold\": 2}\n");
  write_file(data, "winogrande.jsonl",
             "{\"context_options\": [\"Lily gave Tom the ball because Lily\", \"Lily gave Tom the ball because Tom\"], "
             "\"continuation\": \"wanted to play.\", \"gold\": 1}\n"
             "{\"context_options\": [\"The cat sat on the mat, so the cat\", \"The cat sat on the mat, so the mat\"], "
             "\"continuation\": \"was warm.\", \"gold\": 0}\n");
  write_file(data, "lambada_openai.jsonl",
             "{\"context\": \"Once upon a time, there was a little girl named Lily. She liked to play with her\", "
             "\"continuation\": \"toys\"}\n"
             "{\"context\": \"One day, Tom went to the\", \"continuation\": \"park\"}\n"
             "{\"context\": \"The dog said\", \"continuation\": \"zebra\"}\n");

  auto ref = [&](const std::string& c, const std::string& x) {
    return reference_loglik(*model, task_encode_pair(*tok, c, x), model->config.max_position);
  };
  // arc_easy, by hand: per row the argmax of loglik and of loglik / characters.
  struct Row {
    std::string q;
    std::vector<std::string> choices;
    int gold;
  };
  std::vector<Row> rows = {{"Question: What did Lily see?", {"a dog", "a big red ball in the park", "the sun"}, 1},
                           {"Question: How was Tom?", {"happy", "sad and very tired after the long day"}, 0},
                           {"Question: Where did they go?", {"to the café", "home", "to the park"}, 2}};
  double acc = 0, acc_norm = 0;
  std::vector<int> preds;
  for (const auto& r : rows) {
    int best = 0, best_norm = 0;
    std::vector<double> ll, norm;
    for (const auto& c : r.choices) {
      ll.push_back(ref(r.q + "\nAnswer: ", c).loglik);
      norm.push_back(ll.back() / static_cast<double>(task_choice_length(c)));
    }
    for (int c = 1; c < static_cast<int>(ll.size()); ++c) {
      if (ll[c] > ll[best]) best = c;
      if (norm[c] > norm[best_norm]) best_norm = c;
    }
    preds.push_back(best);
    acc += best == r.gold;
    acc_norm += best_norm == r.gold;
  }
  acc /= 3;
  acc_norm /= 3;
  EXPECT_EQ(task_choice_length("to the café"), 11);
  EXPECT_NEAR(task_stderr(2.0 / 3, 3), std::sqrt(2.0 / 9 / 2), 1e-12);

  TaskOptions o;
  o.batch = 4;
  o.log_samples = true;
  auto arc = task_evaluate(*model, *tok, task_load("arc_easy", data + "/arc_easy.jsonl"), o);
  EXPECT_EQ(arc.n, 3);
  EXPECT_DOUBLE_EQ(arc.acc, acc);
  EXPECT_DOUBLE_EQ(arc.acc_norm, acc_norm);
  EXPECT_NEAR(arc.acc_stderr, task_stderr(acc, 3), 1e-12);
  ASSERT_EQ(arc.samples.size(), 3u);
  EXPECT_EQ(arc.samples[2]["line"].get<int64_t>(), 4) << "the blank line 3 is skipped but counted";
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(arc.samples[i]["pred"].get<int>(), preds[i]) << i;

  // winogrande: the shared continuation after each context joined by one space.
  const double w0 = ref("Lily gave Tom the ball because Lily ", "wanted to play.").loglik;
  const double w1 = ref("Lily gave Tom the ball because Tom ", "wanted to play.").loglik;
  const double w2 = ref("The cat sat on the mat, so the cat ", "was warm.").loglik;
  const double w3 = ref("The cat sat on the mat, so the mat ", "was warm.").loglik;
  const double wacc = ((w1 > w0) + (w3 <= w2)) / 2.0;
  auto wino = task_evaluate(*model, *tok, task_load("winogrande", data + "/winogrande.jsonl"), o);
  EXPECT_DOUBLE_EQ(wino.acc, wacc);
  EXPECT_LT(wino.acc_norm, 0) << "winogrande has no acc_norm";

  // lambada: acc = greedy over the whole word, ppl = exp(-mean loglik).
  std::vector<std::pair<std::string, std::string>> lam = {
      {"Once upon a time, there was a little girl named Lily. She liked to play with her", "toys"},
      {"One day, Tom went to the", "park"},
      {"The dog said", "zebra"}};
  double lacc = 0, lsum = 0;
  for (const auto& [c, x] : lam) {
    auto r = ref(c + " ", x);
    lacc += r.is_greedy;
    lsum += r.loglik;
  }
  auto lamb = task_evaluate(*model, *tok, task_load("lambada_openai", data + "/lambada_openai.jsonl"), o);
  EXPECT_DOUBLE_EQ(lamb.acc, lacc / 3);
  // The loglik tolerance of the tests above (1e-5 of |loglik|, float32 logits in another batch layout) carried
  // through exp: 1e-6 of ppl failed by 5e-6 on an AVX2 EPYC (other OpenBLAS kernels); a wrong token moves it by
  // far more.
  const double lmean = lsum / 3;
  EXPECT_NEAR(lamb.ppl, std::exp(-lmean), 1e-5 * std::max(1.0, std::abs(lmean)) * std::exp(-lmean));

  // The CLI reports the same numbers, per item with --log-samples, and --limit keeps the first rows.
  std::string json = data + "/r.json";
  auto r = test::run_cli("eval tasks -m '" + dir + "' --data-dir '" + data +
                         "' --tasks arc_easy,winogrande,lambada_openai -b 3 --log-samples --json '" + json + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(file_read(json));
  EXPECT_DOUBLE_EQ(j["results"]["arc_easy"]["acc,none"].get<double>(), acc);
  EXPECT_DOUBLE_EQ(j["results"]["arc_easy"]["acc_norm,none"].get<double>(), acc_norm);
  EXPECT_DOUBLE_EQ(j["results"]["winogrande"]["acc,none"].get<double>(), wacc);
  EXPECT_NEAR(j["results"]["lambada_openai"]["perplexity,none"].get<double>(), lamb.ppl, 1e-6 * lamb.ppl);
  EXPECT_EQ(j["samples"]["arc_easy"].size(), 3u);
  EXPECT_TRUE(j.contains("provenance"));
  EXPECT_NE(r.out.find("arc_easy"), std::string::npos) << r.out;
  r = test::run_cli("eval tasks -m '" + dir + "' --data-dir '" + data + "' --tasks arc_easy --limit 2 --json '" + json +
                    "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(file_read(json))["results"]["arc_easy"]["n"].get<int64_t>(), 2);

  // Stopped in the middle of a task, twice, and resumed each time: the same results and samples as the uninterrupted
  // run above. With -b 3, arc_easy's 8 requests are 3 batches and winogrande's 4 are 2: the first run stops in
  // arc_easy after batch 1, the second (3 more batches) in winogrande after its batch 1. The partial file is kept until
  // the JSON is written. A resume with another --limit (another run) is refused.
  const std::string base = "eval tasks -m '" + dir + "' --data-dir '" + data +
                           "' --tasks arc_easy,winogrande,lambada_openai -b 3 --log-samples --json '" + data +
                           "/s.json'";
  r = test::run_cli(base + " --stop-after 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(file_exists(data + "/s.json"));
  ASSERT_TRUE(file_exists(data + "/s.json.partial"));
  auto p1 = nlohmann::json::parse(file_read(data + "/s.json.partial"));
  EXPECT_EQ(p1["current"]["task"], "arc_easy");
  EXPECT_EQ(p1["current"]["batches"], 1);
  EXPECT_TRUE(p1["done"].empty());
  auto other = test::run_cli(base + " --limit 2 --resume");
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.err.find("s.json.partial: written by another run"), std::string::npos) << other.err;
  r = test::run_cli(base + " --resume --stop-after 3");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("0 of 3 tasks done, arc_easy from batch 2"), std::string::npos) << r.err;
  auto p2 = nlohmann::json::parse(file_read(data + "/s.json.partial"));
  EXPECT_EQ(p2["current"]["task"], "winogrande");
  EXPECT_EQ(p2["current"]["batches"], 1);
  EXPECT_TRUE(p2["done"].contains("arc_easy"));
  r = test::run_cli(base + " --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("1 of 3 tasks done, winogrande from batch 2"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("winogrande"), std::string::npos) << r.out;
  EXPECT_FALSE(file_exists(data + "/s.json.partial"));
  auto s = nlohmann::json::parse(file_read(data + "/s.json"));
  for (const char* t : {"arc_easy", "winogrande", "lambada_openai"}) {
    auto a = s["results"][t], b = j["results"][t];
    a.erase("seconds"), b.erase("seconds");
    EXPECT_EQ(a, b) << t;
    EXPECT_EQ(s["samples"][t], j["samples"][t]) << t;
  }
  // The resumed run takes the stopped batches' results from the file rather than scoring them again: results
  // changed in the file (every scored request of batch 1 at log-likelihood +5) show in its samples.
  r = test::run_cli(base + " --stop-after 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto p3 = nlohmann::json::parse(file_read(data + "/s.json.partial"));
  auto forged = p3;
  int changed = 0;
  for (auto& x : forged["current"]["loglik"])
    if (x.get<double>() != 0) x = 5.0, ++changed;
  EXPECT_EQ(changed, 3);  // one batch of 3
  file_write_atomic(data + "/forged.json.partial", forged.dump());
  r = test::run_cli("eval tasks -m '" + dir + "' --data-dir '" + data +
                    "' --tasks arc_easy,winogrande,lambada_openai -b 3 --log-samples --json '" + data +
                    "/forged.json' --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  int fives = 0;
  const auto forged_out = nlohmann::json::parse(file_read(data + "/forged.json"));
  for (const auto& row : forged_out["samples"]["arc_easy"])
    for (const auto& l : row["logliks"]) fives += l.get<double>() == 5.0;
  EXPECT_EQ(fives, 3) << r.err;
  // A state that does not fit the task (here one result too few) is refused, naming the file.
  p3["current"]["loglik"].erase(0);
  p3["current"]["is_greedy"].erase(0);
  file_write_atomic(data + "/s.json.partial", p3.dump());
  auto misfit = test::run_cli(base + " --resume");
  EXPECT_EQ(misfit.code, 1);
  EXPECT_NE(misfit.err.find("s.json.partial: resume state has 7 results for a task of 8 requests"), std::string::npos)
      << misfit.err;
  auto bad = test::run_cli("eval tasks -m '" + dir + "' --data-dir '" + data + "' --tasks arc_easy --resume");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("give --json a file"), std::string::npos) << bad.err;
}

// Bad task files: one line "error: <file>:<line>: <problem>", exit 1, before any model is loaded (the tiny model
// directory has no tokenizer, so reaching the model would fail differently).
TEST(Tasks, BadInputFailsWithFileAndLine) {
  std::string data = test::temp_dir("tasks_bad");
  std::string model = test::tiny_model_write(data + "/m", test::TinySpec{});
  const std::string good = "{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n";
  write_file(data, "piqa.jsonl", good + "{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 0\n");
  write_file(data, "boolq.jsonl", good + good + "{\"query\": \"Q\", \"choices\": [\"no\", \"yes\"], \"gold\": 2}\n");
  write_file(data, "arc_easy.jsonl", "{\"query\": \"Q\", \"gold\": 0}\n");
  write_file(data, "winogrande.jsonl", "{\"context_options\": [\"a\", \"b\"], \"continuation\": 3, \"gold\": 0}\n");
  struct Case {
    std::string tasks, want;
  };
  std::vector<Case> cases = {
      {"openbook_qa", data + "/openbook_qa.jsonl: task file not found"},
      {"piqa", data + "/piqa.jsonl:2: malformed JSON"},
      {"boolq", data + "/boolq.jsonl:3: gold 2 is out of range for 2 options"},
      {"arc_easy", data + "/arc_easy.jsonl:1: missing key \"choices\""},
      {"winogrande", data + "/winogrande.jsonl:1: key \"continuation\" is not a string"},
      {"hellaswag", "unknown task 'hellaswag'"},
  };
  for (const auto& c : cases) {
    auto r = test::run_cli("eval tasks -m '" + model + "' --data-dir '" + data + "' --tasks " + c.tasks);
    EXPECT_EQ(r.code, 1) << c.tasks << ": " << r.err;
    EXPECT_NE(r.err.find("error: " + c.want), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // --limit stops reading before a bad row, as lm-eval's --limit reads only the first rows.
  EXPECT_NO_THROW(task_load("boolq", data + "/boolq.jsonl", 2));
  EXPECT_THROW(task_load("boolq", data + "/boolq.jsonl", 3), FormatError);
  auto r = test::run_cli("eval tasks -m '" + model + "' --data-dir '" + data + "/nope'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("task data directory not found"), std::string::npos) << r.err;
}
