// The real pretrained stories260K (llama2.c) converted to HF: greedy generation from BOS reproduces the text
// documented in ../shared/models/stories260K/SOURCE.md, and the CLI's bad-input paths give one-line errors.
#include <gtest/gtest.h>

#include "core/file.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "model/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace patchllm;

TEST(Stories260K, ConvertedModelGreedyMatchesDocumentedText) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(file_exists(dir + "/" + f)) << f;
  auto model = Model::load(dir);
  auto tok = tokenizer_load(dir);
  SamplingOptions so;
  so.max_new_tokens = 64;
  auto ids = generate(*model, {1}, so);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 403);  // " Once"
  std::string text = tok->decode(ids);
  const std::string expected =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she "
      "saw a big, red ball.";
  EXPECT_EQ(text.substr(0, expected.size()), expected) << text;
}

TEST(Stories260K, CliGenerateStreamsTheSameText) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared);
  auto r = test::run_cli("generate -m '" + dir + "' -n 30 --temp 0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Once upon a time, there was a little girl named Lily."), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  // The static decode step (what a CUDA graph captures; eager on the CPU) and the unfused model stream the same text.
  for (const char* flags : {"--cuda-graph", "--no-fuse --no-cuda-graph"}) {
    auto g = test::run_cli("generate -m '" + dir + "' -n 30 --temp 0 --device cpu " + flags);
    ASSERT_EQ(g.code, 0) << flags << ": " << g.err;
    EXPECT_EQ(g.out, r.out) << flags;
  }
  auto bad = test::run_cli("generate -m '" + dir + "' -n 3 --cuda-graph --no-cuda-graph");
  EXPECT_EQ(bad.code, 1) << bad.err;
  EXPECT_NE(bad.err.find("exclude each other"), std::string::npos) << bad.err;
}

// --stop: the streamed text ends before the first occurrence of a stop string in the generated text, for the single
// prompt and in --prompts' JSON (stop reason "stop", fewer tokens); a stop string that never occurs changes nothing.
TEST(Stories260K, CliGenerateStopStrings) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared);
  const std::string base = "generate -m '" + dir + "' -p 'Once upon a time' -n 40 --temp 0 --device cpu";
  auto full = test::run_cli(base);
  ASSERT_EQ(full.code, 0) << full.err;
  const std::string prompt = "Once upon a time";
  ASSERT_EQ(full.out.compare(0, prompt.size(), prompt), 0) << full.out;
  const std::string gen = full.out.substr(prompt.size(), full.out.size() - prompt.size() - 1);  // without the "\n"
  ASSERT_GT(gen.size(), 40u) << gen;
  const std::string stop = gen.substr(25, 4);  // somewhere in the middle of the generated text
  const std::string cut = gen.substr(0, gen.find(stop));
  auto r = test::run_cli(base + " --stop 'zzqq' --stop '" + stop + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, prompt + cut + "\n");
  auto none = test::run_cli(base + " --stop 'zzqq'");
  EXPECT_EQ(none.out, full.out);

  const std::string tmp = test::temp_dir("stop");
  file_write_atomic(tmp + "/p.jsonl", nlohmann::json{{"prompt", prompt}}.dump() + "\n" +
                                          nlohmann::json{{"prompt", "The dog"}}.dump() + "\n");
  auto b = test::run_cli("generate -m '" + dir + "' --device cpu --prompts '" + tmp + "/p.jsonl' -o '" + tmp +
                         "/o.json' -n 40 --temp 0 --stop '" + stop + "'");
  ASSERT_EQ(b.code, 0) << b.err;
  auto j = nlohmann::json::parse(file_read(tmp + "/o.json"));
  EXPECT_EQ(j["results"][0]["completion"], cut);
  EXPECT_EQ(j["results"][0]["stop"], "stop");
  EXPECT_LT(j["results"][0]["generated_tokens"].get<int64_t>(), 40);
  EXPECT_EQ(j["sampling"]["stop"], nlohmann::json::array({stop}));
  auto empty = test::run_cli(base + " --stop ''");
  EXPECT_EQ(empty.code, 1);
  EXPECT_NE(empty.err.find("--stop must not be empty"), std::string::npos) << empty.err;
}

// generate --prompts: every prompt of a JSONL file in left-padded batches (here 3 prompts of different lengths in
// batches of 2) gives, in the JSON, the completion that the single-prompt command streams for it.
TEST(Stories260K, CliGenerateBatchedPromptsMatchOneAtATime) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared);
  const std::string tmp = test::temp_dir("prompts");
  const std::vector<std::string> prompts = {"Once upon a time", "The dog", "Lily and Tom went to the park. They"};
  std::string jsonl;
  for (const auto& p : prompts) {
    nlohmann::json line = {{"prompt", p}};
    if (p == prompts[1]) line["id"] = {{"row", 7}};  // any JSON value, echoed in the result
    jsonl += line.dump() + "\n\n";  // blank lines are skipped
  }
  file_write_atomic(tmp + "/p.jsonl", jsonl);
  auto r = test::run_cli("generate -m '" + dir + "' --device cpu --prompts '" + tmp + "/p.jsonl' -o '" + tmp +
                         "/out.json' -n 24 --temp 0 -b 2");
  ASSERT_EQ(r.code, 0) << r.err;
  // --cuda-graph on the CPU: the static decode steps with the rows' left padding, run eagerly; the same completions.
  auto rg = test::run_cli("generate -m '" + dir + "' --device cpu --prompts '" + tmp + "/p.jsonl' -o '" + tmp +
                          "/graph.json' -n 24 --temp 0 -b 2 --cuda-graph");
  ASSERT_EQ(rg.code, 0) << rg.err;
  EXPECT_NE(r.err.find("round 1/1"), std::string::npos) << r.err;  // -b 2 rows, rounds of 4 x 2 prompts
  auto j = nlohmann::json::parse(file_read(tmp + "/out.json"));
  ASSERT_EQ(j["results"].size(), prompts.size());
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["round"], 8);
  EXPECT_TRUE(j["provenance"]["inputs"].contains(tmp + "/p.jsonl")) << j["provenance"].dump();
  int64_t generated = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& e = j["results"][i];
    EXPECT_EQ(e["index"], i);
    EXPECT_EQ(e["prompt"], prompts[i]);
    auto one =
        test::run_cli("generate -m '" + dir + "' --device cpu --no-cuda-graph -p '" + prompts[i] + "' -n 24 --temp 0");
    ASSERT_EQ(one.code, 0) << one.err;
    EXPECT_EQ(prompts[i] + e["completion"].get<std::string>() + "\n", one.out) << i;
    if (e["generated_tokens"].get<int64_t>() < 24)
      EXPECT_EQ(e["stop"], "eos");
    else
      EXPECT_TRUE(e["stop"] == "eos" || e["stop"] == "length") << e.dump();
    generated += e["generated_tokens"].get<int64_t>();
  }
  EXPECT_EQ(j["speed"]["generated_tokens"], generated);
  EXPECT_EQ(j["results"][1]["id"], (nlohmann::json{{"row", 7}}));
  EXPECT_FALSE(j["results"][0].contains("id"));
  // Prompts go longest first (2 and 0 in the two rows, then 1 into the first row free), results in the file's order.
  const auto pt = [&](size_t i) { return std::to_string(j["results"][i]["prompt_tokens"].get<int64_t>()); };
  EXPECT_NE(r.err.find("round 1/1: 3 prompts of " + pt(1) + "-" + pt(2) + " tokens"), std::string::npos) << r.err;
  auto jg = nlohmann::json::parse(file_read(tmp + "/graph.json"));
  ASSERT_EQ(jg["results"].size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(jg["results"][i]["completion"], j["results"][i]["completion"]);
  EXPECT_EQ(j["decode"], "eager");
  EXPECT_EQ(jg["decode"], "static");

  // Stopped after 2 rounds of 1, then resumed: the same results; the partial file is gone once the JSON is written.
  const std::string base = "generate -m '" + dir + "' --device cpu --prompts '" + tmp + "/p.jsonl' -o '" + tmp +
                           "/r.json' -n 24 --temp 0 -b 1 --round 1";
  auto stopped = test::run_cli(base + " --stop-after 2");
  ASSERT_EQ(stopped.code, 0) << stopped.err;
  EXPECT_FALSE(file_exists(tmp + "/r.json"));
  ASSERT_TRUE(file_exists(tmp + "/r.json.partial"));
  EXPECT_EQ(nlohmann::json::parse(file_read(tmp + "/r.json.partial"))["results"].size(), 2u);
  auto other = test::run_cli(base + " --resume -s 5");  // another seed: not this partial's run
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.err.find("r.json.partial: written by another run"), std::string::npos) << other.err;
  auto resumed = test::run_cli(base + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("2 of 3 prompts done"), std::string::npos) << resumed.err;
  EXPECT_FALSE(file_exists(tmp + "/r.json.partial"));
  auto r2 = nlohmann::json::parse(file_read(tmp + "/r.json"));
  ASSERT_EQ(r2["results"].size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(r2["results"][i]["completion"], j["results"][i]["completion"]);
}

// generate --chat: the prompt goes through a chat template (here a --chat-template file that writes BOS, the system
// message and the user's text, so the tokens equal the plain prompt's: the template's "<s>" must become the BOS id)
// and only the reply is printed; --prompts lines may be conversations ("messages"), echoed in the JSON. A model without
// a template, --system without --chat, and a line with both "prompt" and "messages" are refused with one line.
TEST(Stories260K, CliGenerateChatRendersTheTemplate) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared);
  const std::string tmp = test::temp_dir("chat");
  file_write_atomic(tmp + "/t.jinja",
                    "{{ bos_token }}{% for m in messages %}{{ m.content }}{% if not loop.last %} {% endif %}"
                    "{% endfor %}\n");
  const std::string base = "generate -m '" + dir + "' -n 20 --temp 0 --device cpu ";
  auto plain = test::run_cli(base + "-p 'Once upon a time'");
  ASSERT_EQ(plain.code, 0) << plain.err;
  auto chat = test::run_cli(base + "--chat-template '" + tmp + "/t.jinja' --system 'Once upon' -p 'a time'");
  ASSERT_EQ(chat.code, 0) << chat.err;
  EXPECT_EQ("Once upon a time" + chat.out, plain.out);  // the reply alone, the same tokens

  const nlohmann::json conv = {{"messages", {{{"role", "system"}, {"content", "Once upon"}},
                                             {{"role", "user"}, {"content", "a time"}}}}};
  file_write_atomic(tmp + "/p.jsonl", conv.dump() + "\n" + nlohmann::json({{"prompt", "The dog"}}).dump() + "\n");
  auto r = test::run_cli(base + "--chat-template '" + tmp + "/t.jinja' --prompts '" + tmp + "/p.jsonl' -o '" + tmp +
                         "/out.json'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(file_read(tmp + "/out.json"));
  EXPECT_EQ(j["chat_template"], tmp + "/t.jinja");
  EXPECT_EQ(j["results"][0]["messages"], conv["messages"]);
  EXPECT_EQ(j["results"][0]["completion"].get<std::string>() + "\n", chat.out);
  EXPECT_EQ(j["results"][1]["prompt"], "The dog");  // with --chat, a plain prompt is the user's message
  auto dog = test::run_cli(base + "-p 'The dog'");
  ASSERT_EQ(dog.code, 0) << dog.err;
  EXPECT_EQ("The dog" + j["results"][1]["completion"].get<std::string>() + "\n", dog.out);

  auto none = test::run_cli(base + "--chat -p hi");
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.err.find(dir + ": no chat template"), std::string::npos) << none.err;
  auto conv_none = test::run_cli(base + "--prompts '" + tmp + "/p.jsonl' -o '" + tmp + "/x.json'");
  EXPECT_EQ(conv_none.code, 1);
  EXPECT_NE(conv_none.err.find("no chat template"), std::string::npos) << conv_none.err;
  auto sys = test::run_cli(base + "--system x -p hi");
  EXPECT_EQ(sys.code, 1);
  EXPECT_NE(sys.err.find("--system needs --chat"), std::string::npos) << sys.err;
  file_write_atomic(tmp + "/bad.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"messages\": []}\n");
  auto bad = test::run_cli(base + "--chat-template '" + tmp + "/t.jinja' --prompts '" + tmp + "/bad.jsonl' -o '" +
                           tmp + "/y.json'");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find(tmp + "/bad.jsonl:2: expected an object with a string \"prompt\" or an array \"messages\""),
            std::string::npos)
      << bad.err;
  file_write_atomic(tmp + "/broken.jinja", "{% for m in messages %}");
  auto broken = test::run_cli(base + "--chat-template '" + tmp + "/broken.jinja' -p hi");
  EXPECT_EQ(broken.code, 1);
  EXPECT_NE(broken.err.find(tmp + "/broken.jinja line 1: unexpected end of template"), std::string::npos) << broken.err;
}

TEST(Stories260K, CliInspectReportsRaggedTiles) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared);
  auto r = test::run_cli("inspect -m '" + dir + "' --tile 32x32");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("LlamaForCausalLM"), std::string::npos);
  EXPECT_NE(r.out.find("last row 12 of 32"), std::string::npos) << r.out;  // 172 = 5*32 + 12
}

// eval ppl stopped after 2 batches and resumed gives the uninterrupted run's numbers exactly (the fp64 sums are
// kept in the partial file); a partial from another run (another batch size) is refused.
TEST(Stories260K, PerplexityStopsAndResumesExactly) {
  PATCHLLM_REQUIRE_SHARED(shared, "data/tinystories/valid.txt");
  std::string dir = test::stories260k_hf(test::shared_dir() + "/models/stories260K");
  const std::string tmp = test::temp_dir("ppl_resume");
  auto cmd = [&](const std::string& json, const std::string& extra) {
    return "eval ppl -m '" + dir + "' -f '" + shared + "' -c 128 --chunks 9 -b 2 --json '" + tmp + "/" + json + "' " +
           extra;
  };
  auto full = test::run_cli(cmd("a.json", ""));
  ASSERT_EQ(full.code, 0) << full.err;
  auto stopped = test::run_cli(cmd("b.json", "--stop-after 2"));
  ASSERT_EQ(stopped.code, 0) << stopped.err;
  EXPECT_FALSE(file_exists(tmp + "/b.json"));
  ASSERT_TRUE(file_exists(tmp + "/b.json.partial"));
  EXPECT_EQ(nlohmann::json::parse(file_read(tmp + "/b.json.partial"))["state"]["windows"], 4);
  auto other = test::run_cli("eval ppl -m '" + dir + "' -f '" + shared + "' -c 128 --chunks 9 -b 1 --json '" + tmp +
                             "/b.json' --resume");
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.err.find("b.json.partial: written by another run"), std::string::npos) << other.err;
  auto resumed = test::run_cli(cmd("b.json", "--resume"));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("4 windows done"), std::string::npos) << resumed.err;
  EXPECT_FALSE(file_exists(tmp + "/b.json.partial"));
  auto a = nlohmann::json::parse(file_read(tmp + "/a.json")), b = nlohmann::json::parse(file_read(tmp + "/b.json"));
  EXPECT_EQ(b["n_windows"], 9);
  EXPECT_EQ(b["n_scored"], a["n_scored"]);
  EXPECT_EQ(b["nll_mean"].get<double>(), a["nll_mean"].get<double>());
  EXPECT_EQ(b["ppl_stderr"].get<double>(), a["ppl_stderr"].get<double>());
  EXPECT_EQ(resumed.out, full.out);
}

TEST(Stories260K, PerplexityOnValidationText) {
  PATCHLLM_REQUIRE_SHARED(shared, "data/tinystories/valid.txt");
  std::string dir = test::stories260k_hf(test::shared_dir() + "/models/stories260K");
  std::string json = test::temp_dir("ppl") + "/ppl.json";
  auto r = test::run_cli("eval ppl -m '" + dir + "' -f '" + shared +
                         "' -c 512 --chunks 20 --split-on '\\n<|endoftext|>\\n' --json '" + json + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(file_read(json));
  // Upstream reports a validation loss of ~1.297 (PPL ~3.66) on its own split; a broken model or tokenizer gives
  // PPL in the tens or hundreds (the separator left in as text alone gives ~8).
  EXPECT_GT(j["ppl"].get<double>(), 3.0);
  EXPECT_LT(j["ppl"].get<double>(), 5.5);
  EXPECT_EQ(j["n_windows"], 20);
  EXPECT_EQ(j["n_scored"], 20 * 511);
  EXPECT_EQ(j["provenance"]["inputs"].size(), 3u);
}

// eval logits checks its input file before the model sees it: each bad input is one line naming the file (before,
// an id past the vocabulary was reported without the file, and float ids were truncated to integers silently).
TEST(Stories260K, CliLogitsChecksItsInputs) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared), tmp = test::temp_dir("logits-in");
  const auto ids = torch::tensor({1, 403, 2, 3}, torch::kLong).view({1, 4});
  struct Case {
    std::string name;
    std::map<std::string, torch::Tensor> tensors;
    std::string needle;  // empty: accepted
  };
  const std::vector<Case> cases = {
      {"ok", {{"input_ids", ids}, {"attention_mask", torch::ones({1, 4}, torch::kLong)}}, ""},
      {"oob", {{"input_ids", torch::tensor({1, 2, 512}, torch::kLong).view({1, 3})}}, "input_ids[0, 2] = 512"},
      {"negative", {{"input_ids", torch::tensor({-1, 2}, torch::kLong).view({1, 2})}}, "input_ids[0, 0] = -1"},
      {"float", {{"input_ids", ids.to(torch::kFloat)}}, "input_ids must be integers"},
      {"flat", {{"input_ids", ids.view({4})}}, "non-empty [batch, seq]"},
      {"empty", {{"input_ids", torch::zeros({1, 0}, torch::kLong)}}, "non-empty [batch, seq]"},
      {"mask_shape", {{"input_ids", ids}, {"attention_mask", torch::ones({1, 2}, torch::kLong)}}, "shaped like"},
      {"mask_values", {{"input_ids", ids}, {"attention_mask", torch::full({1, 4}, 2, torch::kLong)}}, "0 or 1"},
      {"no_ids", {{"tokens", ids}}, "no tensor named 'input_ids'"},
  };
  for (const auto& c : cases) {
    const std::string in = tmp + "/" + c.name + ".safetensors";
    safetensors_write(in, c.tensors, {});
    auto r = test::run_cli("eval logits -m '" + dir + "' -i '" + in + "' -o '" + tmp + "/out.safetensors'");
    if (c.needle.empty()) {
      EXPECT_EQ(r.code, 0) << c.name << ": " << r.err;
      continue;
    }
    EXPECT_EQ(r.code, 1) << c.name << ": " << r.err;
    const std::string last = r.err.substr(r.err.rfind("error: ") == std::string::npos ? 0 : r.err.rfind("error: "));
    EXPECT_NE(last.find(in + ": "), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(last.find(c.needle), std::string::npos) << c.name << ": " << r.err;
    EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << c.name << ": " << r.err;
  }
}

// A calibration or perplexity text too short for one window is named in the error.
TEST(Stories260K, CliShortTextsAreNamed) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string dir = test::stories260k_hf(shared), tmp = test::temp_dir("short-calib");
  file_write_atomic(tmp + "/short.txt", "Once upon a time");
  auto r = test::run_cli("prune -m '" + dir + "' --method wanda --pattern 2:4 -f '" + tmp +
                         "/short.txt' --seqlen 64 -o '" + tmp + "/out'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("error: " + tmp + "/short.txt: calibration text has "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fewer than one window of 64 (--seqlen)"), std::string::npos) << r.err;
  auto p = test::run_cli("eval ppl -m '" + dir + "' -f '" + tmp + "/short.txt' -c 64");
  EXPECT_EQ(p.code, 1) << p.err;
  EXPECT_NE(p.err.find("error: " + tmp + "/short.txt: text has "), std::string::npos) << p.err;
}

// Every bad input ends in a one-line "error: ..." naming the problem and a non-zero exit.
TEST(Cli, BadInputsGiveOneLineErrors) {
  auto dir = test::temp_dir("bad");
  file_write_atomic(dir + "/config.json", R"({"architectures":["FalconForCausalLM"],"hidden_size":8})");
  file_write_atomic(dir + "/garbage.bin", "xx");
  file_write_atomic(dir + "/bad.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": \n");
  file_write_atomic(dir + "/noprompt.jsonl", "{\"text\": \"a\"}\n");
  struct Case {
    std::string args, needle;
    int code;
  };
  std::vector<Case> cases = {
      {"inspect -m /nonexistent", "/nonexistent", 1},
      {"inspect -m '" + dir + "'", "unsupported architecture FalconForCausalLM", 1},
      {"eval ppl -m '" + dir + "' -f /nonexistent.txt", "/nonexistent.txt", 1},
      {"convert --from llama2c '" + dir + "/garbage.bin' --tokenizer x -o '" + dir + "/o'", "garbage.bin", 1},
      {"convert --from onnx x -o y", "unknown --from 'onnx'", 1},
      {"generate -m '" + dir + "' --device tpu", "unknown device", 1},
      // sampling flags: refused before the model loads (they used to fail after the prompt was echoed, on its line)
      {"generate -m '" + dir + "' -p hi --top-p 1.5", "--top-p must be in (0, 1], got 1.5", 1},
      {"generate -m '" + dir + "' -p hi -n -2", "-n must be >= 0, got -2", 1},
      {"generate -m '" + dir + "' -p hi --top-k -1", "--top-k must be >= 0, got -1", 1},
      {"generate -m '" + dir + "' -p hi --repetition-penalty 0", "--repetition-penalty must be > 0, got 0", 1},
      // batched generation: flags first, then the prompts file, all before the model loads
      {"generate -m '" + dir + "' --prompts x.jsonl", "--prompts needs -o/--output", 1},
      {"generate -m '" + dir + "' -o out.json", "-o/--output needs --prompts", 1},
      {"generate -m '" + dir + "' --prompts x.jsonl -o o.json -p hi", "-p/--prompt and --prompts exclude each other",
       1},
      {"generate -m '" + dir + "' --prompts x.jsonl -o o.json -b 0", "-b/--batch must be >= 1, got 0", 1},
      {"generate -m '" + dir + "' -p hi --resume", "--resume, --stop-after and --round need --prompts", 1},
      {"generate -m '" + dir + "' -p hi --round 4", "--resume, --stop-after and --round need --prompts", 1},
      {"generate -m '" + dir + "' --prompts x.jsonl -o - --stop-after 1", "give -o a file, not '-'", 1},
      {"generate -m '" + dir + "' --prompts /nonexistent.jsonl -o o.json", "/nonexistent.jsonl", 1},
      {"generate -m '" + dir + "' --prompts '" + dir + "/bad.jsonl' -o o.json", "bad.jsonl:2: malformed JSON", 1},
      {"generate -m '" + dir + "' --prompts '" + dir + "/noprompt.jsonl' -o o.json",
       "noprompt.jsonl:1: expected an object with a string \"prompt\"", 1},
      {"generate -m '" + dir + "' --prompts '" + dir + "/garbage.bin' -o o.json", "garbage.bin:1: malformed JSON", 1},
      // prune flags: refused before the model loads and the calibration text is read
      {"prune -m '" + dir + "' --method wanda --pattern unstructured --sparsity 1.5 -f x -o '" + dir + "/p'",
       "--sparsity 1.5: must be in [0, 1)", 1},
      {"prune -m '" + dir + "' --method wanda --pattern 3:4 -f x -o '" + dir + "/p'", "--pattern 3:4: unknown", 1},
      {"inspect --tile 30x30 -m '" + dir + "'", "multiple of 4", 1},
      {"eval ppl -m x", "", 2},  // missing required -f: usage error
      {"frobnicate", "", 2},
  };
  for (const auto& c : cases) {
    auto r = test::run_cli(c.args);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.err;
    if (c.code == 1) {
      EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << c.args << ": " << r.err;
      EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << ": " << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << ": " << r.err;
    }
  }
}
