// patchllm generate -m DIR -p PROMPT -n N [--temp --top-p --top-k --repetition-penalty --seed --[no-]cuda-graph
// --no-fuse] [--chat [--system S] [--chat-template FILE]]: streamed text on stdout, speed on stderr. With --prompts
// FILE.jsonl -o OUT.json: every prompt (or conversation) of the file, -b rows at a time with continuous batching, in
// rounds of --round prompts, into one JSON.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <set>

#include "cli/common.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/provenance.h"
#include "model/generate.h"
#include "tokenizer/tokenizer.h"

namespace patchllm::cli {

namespace {

struct GenerateOpts {
  std::string model, prompt, prompts, output, partial;  // partial: OUTPUT.partial ("" for '-')
  std::string system, chat_template;                    // --system, --chat-template
  std::vector<std::string> stops;                       // --stop, escapes resolved (cli::unescape)
  int64_t batch = 8, round = 0, stop_after = 0;         // round 0: 4 x batch
  SamplingOptions s;
  DeviceOptions dev;
  bool no_bos = false, no_fuse = false, graph = false, no_graph = false, resume = false, chat = false;
};

struct PromptLine {
  std::string text;                 // "prompt"
  nlohmann::ordered_json messages;  // or "messages" (key order kept, as the template's tojson shows it); else null
  nlohmann::ordered_json tools;     // with "messages": the template's `tools` (function schemas); else null
  nlohmann::json id;                // the line's "id" (any JSON value), echoed in its result; null when absent
};

// One prompt per non-blank line: a JSON object with a string "prompt" (JSONL, so a prompt may hold newlines) or a
// conversation "messages" (an array of {"role", "content", ...} objects, rendered by the chat template, with optional
// "tools" as apply_chat_template's tools=), and an optional "id". Every error names "<path>:<line>".
std::vector<PromptLine> read_prompts(const std::string& path) {
  std::vector<PromptLine> out;
  jsonl_for_each(
      path, file_read(path), [&](int64_t, const std::string& where, const nlohmann::json& j, const std::string& line) {
        const bool has_prompt = j.is_object() && j.contains("prompt"),
                   has_messages = j.is_object() && j.contains("messages");
        PATCHLLM_CHECK(has_prompt != has_messages, FormatError, where,
                       ": expected an object with a string \"prompt\" or an array \"messages\" (one of them)");
        PromptLine p{"", nullptr, nullptr, j.value("id", nlohmann::json())};
        if (has_prompt) {
          PATCHLLM_CHECK(j["prompt"].is_string(), FormatError, where, ": \"prompt\" must be a string");
          p.text = j["prompt"].get<std::string>();
        } else {
          // Again as ordered_json: the template sees the messages' keys in file order.
          const auto ordered = nlohmann::ordered_json::parse(line);
          p.messages = ordered["messages"];
          if (ordered.contains("tools")) {
            p.tools = ordered["tools"];
            PATCHLLM_CHECK(p.tools.is_array(), FormatError, where, ": \"tools\" must be an array");
          }
          PATCHLLM_CHECK(p.messages.is_array() && !p.messages.empty(), FormatError, where,
                         ": \"messages\" must be a non-empty array");
          for (const auto& m : p.messages)
            PATCHLLM_CHECK(m.is_object() && m.contains("role") && m["role"].is_string(), FormatError, where,
                           ": every message needs a string \"role\"");
        }
        out.push_back(std::move(p));
        return true;
      });
  PATCHLLM_CHECK(!out.empty(), FormatError, path, ": no prompts (one JSON object with a \"prompt\" per line)");
  return out;
}

// A prompt's ids: through the chat template (as apply_chat_template(tokenize=True, add_generation_prompt=True): no
// BOS added, the template writes it) for a conversation, or for a prompt with --chat (an optional --system message,
// then the prompt as the user's); else the text with BOS as the tokenizer adds it (unless --no-bos). The caller has
// loaded `ct` (or refused the command) wherever a conversation can occur.
std::vector<int> prompt_ids(const GenerateOpts& o, const Tokenizer& tok, const ChatTemplate* ct, const PromptLine& p,
                            const std::string& where) {
  nlohmann::ordered_json messages = p.messages;
  if (messages.is_null() && o.chat) {
    messages = nlohmann::ordered_json::array();
    if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
    messages.push_back({{"role", "user"}, {"content", p.text}});
  }
  std::vector<int> ids;
  if (messages.is_null()) {
    ids = tok.encode(p.text, !o.no_bos);
  } else {
    const std::string text =
        ct->render(messages, true,
                   p.tools.is_null() ? nlohmann::ordered_json::object() : nlohmann::ordered_json{{"tools", p.tools}});
    ids = tok.encode(text, false);
    if (log_get_level() >= LogLevel::DEBUG) {
      std::string list;
      for (int id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
      log_debug(where, ": chat prompt ", nlohmann::json(text).dump(), " -> ", ids.size(), " ids [", list, "]");
    }
  }
  if (ids.empty()) {
    PATCHLLM_CHECK(tok.bos_id() >= 0, InvalidArgument, where, ": empty prompt and the tokenizer has no BOS token");
    ids.push_back(tok.bos_id());
  }
  return ids;
}

// --prompts: every prompt of the file through generate_batch, one JSON to o.output (results in the file's order). The
// prompts go longest first in rounds of o.round; within a round o.batch rows decode together and a row whose prompt is
// done takes the round's next prompt (continuous batching), so prompts of similar length share rows and little of
// the prefill goes to padding. After each round the results so far go to OUTPUT.partial (atomically), which --resume
// continues from when it was written by the same run (same prompts file contents, model, sampling, batch, round); it
// is removed once OUTPUT is written. A row does not depend on the other rows beyond rounding, so a resumed run gives
// the uninterrupted one's results.
void generate_prompts_file(const GenerateOpts& o, Model& model, const Tokenizer& tok, const ChatTemplate* ct,
                           const ModelLoadOptions& lo, const std::vector<PromptLine>& texts) {
  const auto& stop_ids = o.s.stop_ids;
  const nlohmann::json run = {{"prompts_sha256", sha256_file(o.prompts)},
                              {"model", o.model},
                              {"batch", o.batch},
                              {"round", o.round},
                              {"order", "longest first"},
                              {"sampling",
                               {{"temperature", o.s.temperature},
                                {"top_p", o.s.top_p},
                                {"top_k", o.s.top_k},
                                {"repetition_penalty", o.s.repetition_penalty},
                                {"stop", o.stops},
                                {"seed", o.s.seed},
                                {"max_new_tokens", o.s.max_new_tokens},
                                {"bos", !o.no_bos}}},
                              {"chat", o.chat},
                              {"system", o.system},
                              {"chat_template", ct ? ct->origin() : ""},
                              {"chat_template_sha256", ct ? ct->source_sha256() : ""}};
  const std::string& partial = o.partial;
  nlohmann::json results = nlohmann::json::array();
  GenerateStats total;
  int64_t n_refills = 0;  // continuous batching's refills and their time (part of prompt_seconds)
  double refill_seconds = 0;
  std::set<int64_t> buckets;  // the refill lengths seen in this process: a new one may pay first-call costs
  const int64_t n = static_cast<int64_t>(texts.size()), rounds = (n + o.round - 1) / o.round;
  int64_t start = 0;
  if (o.resume && file_exists(partial)) {
    const nlohmann::json p = partial_read(partial, run);
    PATCHLLM_CHECK(p.contains("results") && p["results"].is_array() && p["results"].size() <= static_cast<size_t>(n) &&
                       p.contains("speed") && p["speed"].is_object(),
                   FormatError, partial, ": malformed (no results or speed); delete it to start over");
    results = p["results"];
    for (const auto& e : results)
      PATCHLLM_CHECK(e.is_object() && e.contains("index") && e["index"].is_number_integer() &&
                         e["index"].get<int64_t>() >= 0 && e["index"].get<int64_t>() < n,
                     InvalidArgument, partial, ": a result without a valid \"index\"; delete it to start over");
    start = static_cast<int64_t>(results.size());
    PATCHLLM_CHECK(start % o.round == 0 || start == n, InvalidArgument, partial, ": ", start,
                   " results is not a whole number of rounds of ", o.round);
    total.prompt_tokens = p["speed"].value("prompt_tokens", int64_t(0));
    total.generated_tokens = p["speed"].value("generated_tokens", int64_t(0));
    total.prompt_seconds = p["speed"].value("prompt_seconds", 0.0);
    total.decode_seconds = p["speed"].value("decode_seconds", 0.0);
    n_refills = p["speed"].value("refills", int64_t(0));
    refill_seconds = p["speed"].value("refill_seconds", 0.0);
    log_info("resuming from ", partial, ": ", start, " of ", n, " prompts done");
  }
  auto speed = [&] {
    return nlohmann::json{{"prompt_tokens", total.prompt_tokens},
                          {"prompt_seconds", total.prompt_seconds},
                          {"generated_tokens", total.generated_tokens},
                          {"decode_seconds", total.decode_seconds},
                          {"refills", n_refills},
                          {"refill_seconds", refill_seconds}};
  };
  std::vector<std::vector<int>> all_ids;
  for (int64_t i = 0; i < n; ++i)
    all_ids.push_back(prompt_ids(o, tok, ct, texts[static_cast<size_t>(i)], str(o.prompts, ": prompt ", i + 1)));
  std::vector<int64_t> order(static_cast<size_t>(n));  // processing order: longest first, ties in file order
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return all_ids[size_t(a)].size() > all_ids[size_t(b)].size(); });
  int64_t done_rounds = 0;
  for (int64_t b0 = start; b0 < n; b0 += o.round) {
    const int64_t b1 = std::min(n, b0 + o.round);
    std::vector<std::vector<int>> ids;
    for (int64_t k = b0; k < b1; ++k) ids.push_back(all_ids[static_cast<size_t>(order[size_t(k)])]);
    // Each prompt's text as it is generated, decoded after its ids as the streamed single-prompt output is
    // (leading spaces kept), cut before a stop string, which also ends the row.
    std::vector<StopStringDecoder> decs;
    std::vector<std::string> completions(ids.size());
    for (const auto& p : ids) {
      decs.emplace_back(tok, o.stops);
      decs.back().prime(p);
    }
    GenerateStats st;
    const auto outs = generate_batch(
        model, ids, o.s, &st,
        [&](size_t k, int id) {  // k: the prompt within the round
          completions[k] += decs[k].push(id);
          return decs[k].stopped();
        },
        o.batch);
    for (int64_t k = b0; k < b1; ++k) {
      const size_t r = static_cast<size_t>(k - b0);
      const int64_t i = order[static_cast<size_t>(k)];
      const auto& out = outs[r];
      completions[r] += decs[r].flush();
      const bool eos = !out.empty() && std::find(stop_ids.begin(), stop_ids.end(), out.back()) != stop_ids.end();
      const PromptLine& line = texts[static_cast<size_t>(i)];
      results.push_back({{"index", i},
                         {"prompt", line.messages.is_null() ? nlohmann::json(line.text) : nlohmann::json()},
                         {"completion", completions[r]},
                         {"prompt_tokens", ids[r].size()},
                         {"generated_tokens", out.size()},
                         {"stop", decs[r].stopped() ? "stop"
                                  : eos             ? "eos"
                                                    : "length"}});
      if (!line.messages.is_null()) results.back()["messages"] = nlohmann::json::parse(line.messages.dump());
      if (!line.tools.is_null()) results.back()["tools"] = nlohmann::json::parse(line.tools.dump());
      if (!line.id.is_null()) results.back()["id"] = line.id;
    }
    total.prompt_tokens += st.prompt_tokens, total.generated_tokens += st.generated_tokens;
    total.prompt_seconds += st.prompt_seconds, total.decode_seconds += st.decode_seconds;
    for (const auto& r : st.refills) {
      const bool fresh = buckets.insert(r.bucket).second;
      log_debug("refill ", ++n_refills, ": ", r.tokens, " tokens at length ", r.bucket, fresh ? " (new)" : "", ", ",
                1000 * r.seconds, " ms");
      refill_seconds += r.seconds;
    }
    log_info("round ", b0 / o.round + 1, "/", rounds, ": ", b1 - b0, " prompts of ", ids.back().size(), "-",
             ids.front().size(), " tokens, ", st.generated_tokens, " generated, ",
             st.generated_tokens / std::max(st.decode_seconds, 1e-9), " tok/s");
    if (!partial.empty()) partial_write(partial, run, {{"results", results}, {"speed", speed()}});
    if (o.stop_after > 0 && ++done_rounds == o.stop_after && b1 < n) {
      log_info("stopped after ", o.stop_after, " rounds; results so far in ", partial, " (continue with --resume)");
      return;
    }
  }
  std::sort(results.begin(), results.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return a["index"].get<int64_t>() < b["index"].get<int64_t>();
  });
  nlohmann::json j = {{"model", o.model},
                      {"prompts", o.prompts},
                      {"device", describe(lo)},
                      {"batch", o.batch},
                      {"round", o.round},
                      // static: fixed-shape DecodeGraph steps (CUDA graphs on CUDA); eager: Model::forward per token
                      {"decode", o.s.decode_graph ? "static" : "eager"},
                      {"sampling", run["sampling"]},
                      {"chat_template", run["chat_template"]},
                      {"results", results},
                      {"speed", speed()}};
  std::vector<std::string> inputs = {o.prompts};
  if (!o.chat_template.empty()) inputs.push_back(o.chat_template);
  append_model_inputs(inputs, o.model);
  j["provenance"] = provenance_json(inputs);
  write_json(o.output, j);
  if (!partial.empty()) std::remove(partial.c_str());
}

}  // namespace

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOpts>();
  auto* sub = app.add_subcommand("generate", "generate text (greedy at --temp 0)");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory")->required()->envname("PATCHLLM_ARG_MODEL");
  sub->add_option("-p,--prompt", o->prompt, "prompt text (empty: start from BOS)")->capture_default_str();
  sub->add_option("-n,--n-predict", o->s.max_new_tokens, "tokens to generate")->capture_default_str();
  sub->add_option("--temp", o->s.temperature, "sampling temperature, 0 = greedy")->capture_default_str();
  sub->add_option("--top-p", o->s.top_p, "nucleus sampling mass")->capture_default_str();
  sub->add_option("--top-k", o->s.top_k, "sample among the k most likely ids (before --top-p); 0 = all")
      ->capture_default_str();
  sub->add_option("--repetition-penalty", o->s.repetition_penalty,
                  "HF's repetition_penalty: the logit l of an id already in the prompt or output becomes l/p if l > 0, "
                  "else l*p, also when greedy; 1 = off")
      ->capture_default_str();
  sub->add_option("-s,--seed", o->s.seed, "sampling seed")->capture_default_str();
  sub->add_option("--stop", o->stops,
                  "stop string (repeatable): generation of a prompt ends once its text contains it, and the text is "
                  "cut before it; \\n and \\t are read as escapes, as in eval ppl --split-on")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_flag("--no-bos", o->no_bos, "do not add BOS/special tokens to the prompt");
  sub->add_flag("--chat", o->chat,
                "the prompt is a user message, rendered with the model's chat template (tokenizer_config.json "
                "chat_template or chat_template.jinja) with the assistant's turn opened, as HF's apply_chat_template("
                "add_generation_prompt=True); only the reply is printed");
  sub->add_option("--system", o->system, "with --chat: a system message before the prompt");
  sub->add_option("--chat-template", o->chat_template,
                  "Jinja file to use instead of the model's chat template (implies --chat)")
      ->check(CLI::ExistingFile);
  sub->add_flag("--cuda-graph", o->graph,
                "decode with fixed-shape steps captured once as a CUDA graph and replayed (the default on CUDA; on the "
                "CPU the same steps run eagerly; a failed capture warns and decodes eagerly)");
  sub->add_flag("--no-cuda-graph", o->no_graph, "decode with Model::forward per token (eager)");
  sub->add_flag("--no-fuse", o->no_fuse, "keep q,k,v and gate,up as separate linears (fused: one GEMM each)");
  sub->add_option(
      "--prompts", o->prompts,
      "JSONL file, one {\"prompt\": ...} or {\"messages\": [...], \"tools\": [...]} (a conversation for the "
      "chat template) per line: generate for each (-b rows with continuous batching) into the JSON of -o "
      "instead of streaming one prompt");
  auto* output_opt = sub->add_option("-o,--output", o->output, "with --prompts: JSON results file ('-' = stdout)");
  sub->add_option("-b,--batch", o->batch, "with --prompts: rows decoded together (continuous batching)")
      ->capture_default_str();
  sub->add_option("--round", o->round,
                  "with --prompts: prompts per round (results saved after each, for --resume); 0 = 4 x --batch")
      ->capture_default_str();
  sub->add_flag("--resume", o->resume,
                "with --prompts: continue from OUTPUT.partial, the results a stopped run of the same command wrote");
  sub->add_option("--stop-after", o->stop_after,
                  "with --prompts: stop after this many rounds (results kept in OUTPUT.partial; finish with --resume)");
  o->dev.add(sub);
  sub->callback([o, output_opt, sub] {
    auto lo = o->dev.resolve();
    PATCHLLM_CHECK(!(o->graph && o->no_graph), InvalidArgument, "--cuda-graph and --no-cuda-graph exclude each other");
    const bool many = !o->prompts.empty();
    PATCHLLM_CHECK(!many || output_opt->count() > 0, InvalidArgument, "--prompts needs -o/--output");
    PATCHLLM_CHECK(many || output_opt->count() == 0, InvalidArgument, "-o/--output needs --prompts");
    PATCHLLM_CHECK(!many || sub->count("--prompt") == 0, InvalidArgument,
                   "-p/--prompt and --prompts exclude each other");
    PATCHLLM_CHECK(o->batch >= 1, InvalidArgument, "-b/--batch must be >= 1, got ", o->batch);
    PATCHLLM_CHECK(o->round >= 0, InvalidArgument, "--round must be >= 0, got ", o->round);
    PATCHLLM_CHECK(many || (!o->resume && o->stop_after == 0 && o->round == 0), InvalidArgument,
                   "--resume, --stop-after and --round need --prompts");
    if (o->round == 0) o->round = 4 * o->batch;
    if (!o->chat_template.empty()) o->chat = true;
    PATCHLLM_CHECK(o->system.empty() || o->chat, InvalidArgument, "--system needs --chat");
    PATCHLLM_CHECK(!(o->chat && o->no_bos), InvalidArgument,
                   "--no-bos does nothing with --chat: the chat template writes BOS (or not) itself");
    o->partial = partial_path(o->output, o->resume, o->stop_after, "-o");
    // The sampling flags, checked before anything loads or the prompt is echoed (an error after the echo would
    // share its line).
    check_sampling_options(o->s);
    for (auto& st : o->stops) {
      PATCHLLM_CHECK(!st.empty(), InvalidArgument, "--stop must not be empty");
      st = unescape(st);
    }
    o->s.decode_graph = o->graph || (lo.device.is_cuda() && !o->no_graph);
    const std::vector<PromptLine> texts = many ? read_prompts(o->prompts) : std::vector<PromptLine>{};
    auto tok = tokenizer_load(o->model);
    const bool conversations =
        std::any_of(texts.begin(), texts.end(), [](const PromptLine& p) { return !p.messages.is_null(); });
    // Loaded (and so checked) whenever it may be needed, before the model.
    std::unique_ptr<ChatTemplate> ct;
    if (o->chat || conversations) ct = ChatTemplate::load(o->model, tok.get(), o->chat_template);
    PATCHLLM_CHECK(!(o->chat || conversations) || ct, InvalidArgument, o->model,
                   ": no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja); pass "
                   "--chat-template FILE");
    auto model = Model::load(o->model, lo);
    log_info("model ", o->model, " (", model->config.architecture, ", ", model->num_parameters(), " params) on ",
             describe(lo));
    if (!o->no_fuse) model_fuse_projections(*model);
    add_prefill_images_for_sharex(*model, lo);
    o->s.stop_ids = model->config.eos_token_ids;
    if (tok->eos_id() >= 0) o->s.stop_ids.push_back(tok->eos_id());
    if (many) {
      generate_prompts_file(*o, *model, *tok, ct.get(), lo, texts);
      return;
    }
    const std::vector<int> prompt =
        prompt_ids(*o, *tok, ct.get(), {o->prompt, nullptr, nullptr, nullptr}, "-p/--prompt");
    if (!o->chat) std::cout << o->prompt << std::flush;  // a chat prints only the reply
    StopStringDecoder dec(*tok, o->stops);
    dec.prime(prompt);  // so the first generated piece is decoded in context (leading spaces)
    GenerateStats st;
    auto stream = [&](size_t, int id) {
      std::cout << dec.push(id) << std::flush;
      return dec.stopped();
    };
    generate(*model, prompt, o->s, {}, &st, stream);
    std::cout << dec.flush() << std::endl;
    std::fprintf(stderr, "prompt: %lld tokens, %.1f tok/s | generation: %lld tokens, %.1f tok/s\n",
                 static_cast<long long>(st.prompt_tokens), st.prompt_tokens / std::max(st.prompt_seconds, 1e-9),
                 static_cast<long long>(st.generated_tokens), st.generated_tokens / std::max(st.decode_seconds, 1e-9));
  });
}

}  // namespace patchllm::cli
