// patchllm eval ppl -m DIR -f TEXT [-c CTX] [--chunks N] [--head-rows R] [--masks F] [--json OUT [--resume]
//   [--stop-after N]]
// patchllm eval logits -m DIR -i IDS.safetensors -o OUT.safetensors [--masks F]
// patchllm eval tasks -m DIR --data-dir DIR [--tasks a,b] [--limit N] [-b B] [--masks F] [--json OUT] [--log-samples]
//   [--resume] [--stop-after N]
#include <cstdio>

#include "cli/common.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/provenance.h"
#include "eval/logits_input.h"
#include "eval/ppl.h"
#include "eval/tasks.h"
#include "io/safetensors.h"
#include "mask/mask.h"
#include "tokenizer/tokenizer.h"

namespace patchllm::cli {

namespace {

// The model as every eval subcommand runs it: loaded, the mask file (if any) applied to the frozen weights, q|k|v and
// gate|up fused on CUDA (fewer launches; CPU results stay bit for bit as without). mask_sparsity: -1 without masks.
std::unique_ptr<Model> load_eval_model(const std::string& dir, const std::string& masks, const ModelLoadOptions& lo,
                                       double* mask_sparsity = nullptr) {
  auto model = Model::load(dir, lo);
  double sparsity = -1;
  if (!masks.empty()) {
    auto ms = mask_load_for_model(masks, dir, *model);
    sparsity = ms.sparsity();
    log_info("applied masks ", masks, ": decoder-linear sparsity ", sparsity);
  }
  if (lo.device.is_cuda()) model_fuse_projections(*model);
  add_prefill_images_for_sharex(*model, lo);
  if (mask_sparsity) *mask_sparsity = sparsity;
  return model;
}

}  // namespace

void register_eval(CLI::App& app) {
  auto* ev = app.add_subcommand("eval", "evaluate a model");
  ev->require_subcommand(1);
  struct Opts {
    std::string model, file, json, split_on, masks;
    PplOptions ppl;
    DeviceOptions dev;
    bool resume = false;
    int64_t stop_after = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = ev->add_subcommand("ppl", "perplexity, paper protocol (non-overlapping windows, tail dropped)");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory")->required()->envname("PATCHLLM_ARG_MODEL");
  sub->add_option("-f,--file", o->file, "text file (e.g. wiki.test.raw)")->required();
  sub->add_option("-c,--ctx-size", o->ppl.ctx, "window length; 0 = min(4096, model max)")->capture_default_str();
  sub->add_option("-b,--batch-size", o->ppl.batch, "windows per forward pass")->capture_default_str();
  sub->add_option("--chunks", o->ppl.max_windows, "evaluate only the first N windows (0 = all)")->capture_default_str();
  sub->add_option("--head-rows", o->ppl.head_rows,
                  "positions per LM-head + log-softmax chunk (bounds the logits in memory; 0 = a whole batch at once)")
      ->capture_default_str();
  sub->add_option("--split-on", o->split_on,
                  "document separator (\\n escapes allowed): each document is tokenized with BOS, separators "
                  "dropped, documents concatenated (e.g. TinyStories: '\\n<|endoftext|>\\n')");
  sub->add_option("--json", o->json, "write results as JSON to this file ('-' = stdout)");
  sub->add_option("--masks", o->masks, "apply this mask file (masks.safetensors or MaskLLM .npz) before evaluating");
  sub->add_flag("--resume", o->resume,
                "with --json FILE: continue from the windows a stopped run of the same command scored (FILE.partial)");
  sub->add_option("--stop-after", o->stop_after,
                  "with --json FILE: stop after this many batches (state kept in FILE.partial; finish with --resume)");
  o->dev.add(sub);
  sub->callback([o] {
    auto lo = o->dev.resolve();
    PATCHLLM_CHECK(o->ppl.head_rows >= 0, InvalidArgument, "--head-rows must be >= 0 (0 = all at once), got ",
                   o->ppl.head_rows);
    PATCHLLM_CHECK(file_exists(o->file), InvalidArgument, o->file, ": text file not found");
    const std::string partial = partial_path(o->json, o->resume, o->stop_after, "--json");
    std::string text = file_read(o->file);
    PATCHLLM_CHECK(!text.empty(), InvalidArgument, o->file, ": text file is empty");
    auto tok = tokenizer_load(o->model);
    double t0 = now_seconds();
    std::string sep = unescape(o->split_on);
    std::vector<int> ids = tokenize_documents(*tok, text, sep);
    log_info("tokenized ", o->file, ": ", ids.size(), " tokens in ", now_seconds() - t0, " s, ids sha256 (int32 LE) ",
             token_ids_sha256(ids));
    // The state so far goes to JSON.partial (atomically) every 10 s and when stopped; --resume continues from it when
    // it was written by the same command (the same ids, model, window, batch, chunks, head rows, masks, device).
    const nlohmann::json run = {{"ids_sha256", token_ids_sha256(ids)},
                                {"model", o->model},
                                {"ctx", o->ppl.ctx},
                                {"batch", o->ppl.batch},
                                {"chunks", o->ppl.max_windows},
                                {"head_rows", o->ppl.head_rows},
                                {"masks", o->masks.empty() ? "" : sha256_file(o->masks)},
                                {"device", describe(lo)}};
    if (o->resume && file_exists(partial)) {
      o->ppl.resume = ppl_partial_read(partial, run);
      log_info("resuming from ", partial, ": ", o->ppl.resume.windows, " windows done");
    }
    int64_t batches = 0;
    double last_write = now_seconds();
    if (!partial.empty())
      o->ppl.checkpoint = [&](const PplState& st) {
        const bool stop = o->stop_after > 0 && ++batches == o->stop_after;
        if (stop || now_seconds() - last_write > 10) {
          partial_write(partial, run, {{"state", st.to_json()}});
          last_write = now_seconds();
        }
        return !stop;
      };
    double mask_sparsity = -1;
    auto model = load_eval_model(o->model, o->masks, lo, &mask_sparsity);
    o->ppl.source = o->file;
    auto r = ppl_evaluate(*model, ids, o->ppl);
    if (r.stopped) {
      log_info("stopped after ", o->stop_after, " batches (", r.n_windows, " windows); state in ", partial,
               " (continue with --resume)");
      return;
    }
    std::fprintf(stderr, "Final estimate: PPL = %.4f +/- %.4f (%lld windows of %lld, %.1f s)\n", r.ppl, r.ppl_stderr,
                 static_cast<long long>(r.n_windows), static_cast<long long>(r.ctx), r.seconds);
    std::printf("%.4f\n", r.ppl);
    if (!o->json.empty()) {
      auto j = r.to_json();
      if (!sep.empty()) j["join"] = "documents split on '" + o->split_on + "', each tokenized with BOS, concatenated";
      j["model"] = o->model;
      if (!o->masks.empty()) j["masks"] = {{"file", o->masks}, {"sparsity", mask_sparsity}};
      j["dataset"] = o->file;
      j["device"] = describe(lo);
      std::vector<std::string> inputs = {o->file};
      append_model_inputs(inputs, o->model, o->masks);
      j["provenance"] = provenance_json(inputs);
      write_json(o->json, j);
      if (!partial.empty()) std::remove(partial.c_str());
    }
  });

  // eval tasks: zero-shot accuracy with lm-eval conventions (src/eval/tasks.h).
  struct TaskOpts {
    std::string model, data_dir, json, masks;
    std::vector<std::string> tasks = task_names();
    int64_t limit = 0, stop_after = 0;
    bool resume = false;
    TaskOptions task;
    DeviceOptions dev;
  };
  auto to = std::make_shared<TaskOpts>();
  auto* tk = ev->add_subcommand("tasks",
                                "zero-shot tasks (piqa, arc, openbook_qa, boolq, winogrande, lambada), "
                                "lm-eval log-likelihood scoring");
  tk->add_option("-m,--model", to->model, "Hugging Face model directory")->required()->envname("PATCHLLM_ARG_MODEL");
  // Required rather than guessed: the binary has no fixed place relative to a checkout. Tests use ../shared beside it.
  tk->add_option("--data-dir", to->data_dir,
                 "directory holding <task>.jsonl files (e.g. ../shared/data/tasks beside the checkout); "
                 "env PATCHLLM_TASKS_DIR")
      ->required()
      ->envname("PATCHLLM_TASKS_DIR");
  std::string all;
  for (const auto& n : task_names()) all += (all.empty() ? "" : ",") + n;
  tk->add_option("--tasks", to->tasks, "comma-separated tasks (default: " + all + ")")->delimiter(',');
  tk->add_option("--limit", to->limit, "evaluate only the first N rows of each task (0 = all)")->capture_default_str();
  tk->add_option("-b,--batch-size", to->task.batch, "sequences per forward pass")->capture_default_str();
  tk->add_option("--max-length", to->task.max_len,
                 "longest model input; longer ones lose tokens on the left (0 = max_position_embeddings)")
      ->capture_default_str();
  tk->add_option("--json", to->json, "write lm-eval-shaped results with provenance to this file ('-' = stdout)");
  tk->add_flag("--log-samples,--log_samples", to->task.log_samples,
               "with --json: per row its line, gold, predicted index (pred, pred_norm) and log-likelihoods");
  tk->add_option("--masks", to->masks, "apply this mask file (masks.safetensors or MaskLLM .npz) before evaluating");
  tk->add_flag("--resume", to->resume,
               "with --json FILE: continue a stopped run of the same command from FILE.partial (its finished tasks "
               "and the scored batches of the task it stopped in)");
  tk->add_option("--stop-after", to->stop_after,
                 "with --json FILE: stop after this many batches (state kept in FILE.partial; finish with --resume)");
  to->dev.add(tk);
  tk->callback([to] {
    auto lo = to->dev.resolve();
    PATCHLLM_CHECK(to->limit >= 0, InvalidArgument, "--limit must be >= 0 (0 = all), got ", to->limit);
    PATCHLLM_CHECK(to->task.batch >= 1, InvalidArgument, "--batch-size must be >= 1, got ", to->task.batch);
    PATCHLLM_CHECK(dir_exists(to->data_dir), InvalidArgument, to->data_dir, ": task data directory not found");
    const std::string partial = partial_path(to->json, to->resume, to->stop_after, "--json");
    // Every task file is read and checked before the model loads, so a bad row fails in a second, not after an hour.
    std::vector<Task> tasks;
    for (const auto& name : to->tasks)
      tasks.push_back(task_load(name, path_join(to->data_dir, name + ".jsonl"), to->limit));
    // After each task, every 10 s and when stopped, the results so far go to JSON.partial (atomically): the finished
    // tasks and the scored batches of the current one. --resume continues from it when it was written by the same
    // command (model, task files' contents, limit, batch, length, masks, device); batches are independent, so the
    // resumed run gives the uninterrupted one's numbers.
    nlohmann::json run = {{"model", to->model},
                          {"limit", to->limit},
                          {"batch_size", to->task.batch},
                          {"max_length", to->task.max_len},
                          {"log_samples", to->task.log_samples},
                          {"device", describe(lo)},
                          {"masks", to->masks.empty() ? "" : sha256_file(to->masks)}};
    for (const auto& t : tasks) run["tasks"].push_back({{"name", t.name}, {"sha256", sha256_file(t.path)}});
    TaskPartial resumed;
    if (to->resume && file_exists(partial)) {
      resumed = task_partial_read(partial, run);
      log_info(
          "resuming from ", partial, ": ", resumed.done.size(), " of ", tasks.size(), " tasks done",
          resumed.current.empty() ? std::string() : str(", ", resumed.current, " from batch ", resumed.batches + 1));
    }
    const std::map<std::string, TaskResult>& finished = resumed.done;
    nlohmann::json done = nlohmann::json::object();  // what the partial file holds: name -> {"result", "samples"}
    for (const auto& [name, r] : finished) done[name] = {{"result", r.to_json()}, {"samples", r.samples}};
    auto tok = tokenizer_load(to->model);
    double mask_sparsity = -1;
    auto model = load_eval_model(to->model, to->masks, lo, &mask_sparsity);
    std::vector<TaskResult> results;
    int64_t batches_run = 0;
    double last_write = now_seconds();
    struct Stop {};  // thrown from after_batch once --stop-after batches have run
    for (const auto& t : tasks) {
      if (finished.count(t.name)) {
        results.push_back(finished.at(t.name));
        continue;
      }
      TaskOptions topt = to->task;
      if (resumed.current == t.name) topt.resume_batches = resumed.batches, topt.resume_ll = resumed.ll;
      topt.after_batch = [&](int64_t batches, const std::vector<TaskLoglik>& ll) {
        const bool stop = to->stop_after > 0 && ++batches_run == to->stop_after;
        if (!partial.empty() && (stop || now_seconds() - last_write > 10)) {
          partial_write(partial, run, {{"done", done}, {"current", task_current_json(t.name, batches, ll)}});
          last_write = now_seconds();
        }
        if (stop) throw Stop{};
      };
      try {
        results.push_back(task_evaluate(*model, *tok, t, topt));
      } catch (const Stop&) {
        log_info("stopped after ", to->stop_after, " batches, in ", t.name, "; state in ", partial,
                 " (continue with --resume)");
        return;
      } catch (const InvalidArgument& e) {  // a resume state that does not fit the task (task_loglik's check)
        if (resumed.current != t.name || std::string(e.what()).rfind("resume state", 0) != 0) throw;
        throw FormatError(str(partial, ": ", e.what(), "; delete the file to start over"));
      }
      done[t.name] = {{"result", results.back().to_json()}, {"samples", results.back().samples}};
      if (!partial.empty()) partial_write(partial, run, {{"done", done}});
      last_write = now_seconds();
    }
    std::printf("%-15s %6s %8s %9s %8s  %s\n", "task", "n", "acc", "acc_norm", "stderr", "");
    for (const auto& r : results) {
      char buf[32] = "-";
      if (r.acc_norm >= 0) std::snprintf(buf, sizeof buf, "%.4f", r.acc_norm);
      std::string extra = r.ppl >= 0 ? str("ppl ", r.ppl) : "";
      std::printf("%-15s %6lld %8.4f %9s %8.4f  %s\n", r.name.c_str(), static_cast<long long>(r.n), r.acc, buf,
                  r.acc_stderr, extra.c_str());
    }
    if (!to->json.empty()) {
      nlohmann::json j;
      std::vector<std::string> inputs;
      for (size_t i = 0; i < results.size(); ++i) {
        j["results"][results[i].name] = results[i].to_json();
        j["n-shot"][results[i].name] = 0;
        if (to->task.log_samples) j["samples"][results[i].name] = results[i].samples;
        inputs.push_back(tasks[i].path);
      }
      j["config"] = {{"model", to->model},
                     {"data_dir", to->data_dir},
                     {"tasks", to->tasks},
                     {"limit", to->limit},
                     {"batch_size", to->task.batch},
                     {"max_length", to->task.max_len > 0 ? to->task.max_len : model->config.max_position},
                     {"special_tokens", "as HF tokenizer(text) for this model (BOS where it adds one)"},
                     {"acc_norm", "log-likelihood / length of the choice in characters (lm-eval)"},
                     {"device", describe(lo)}};
      if (!to->masks.empty()) j["config"]["masks"] = {{"file", to->masks}, {"sparsity", mask_sparsity}};
      append_model_inputs(inputs, to->model, to->masks);
      j["provenance"] = provenance_json(inputs);
      write_json(to->json, j);
      if (!partial.empty()) std::remove(partial.c_str());
    }
  });

  // eval logits: raw logits for given token ids, for cross-checks against other engines (HF transformers).
  struct LogitOpts {
    std::string model, input, output, masks;
    DeviceOptions dev;
  };
  auto lo = std::make_shared<LogitOpts>();
  auto* lg = ev->add_subcommand("logits", "write fp32 logits for the token ids in a safetensors file");
  lg->add_option("-m,--model", lo->model, "Hugging Face model directory")->required();
  lg->add_option("-i,--input", lo->input, "safetensors with input_ids [B,T] (I64) and optional attention_mask")
      ->required();
  lg->add_option("-o,--output", lo->output, "output safetensors with 'logits' [B,T,V] F32")->required();
  lg->add_option("--masks", lo->masks, "apply this mask file before the forward");
  lo->dev.add(lg);
  lg->callback([lo] {
    auto opt = lo->dev.resolve();
    const LogitInputs in = load_logit_inputs(lo->input);  // before the (slow) model load
    auto model = load_eval_model(lo->model, lo->masks, opt);
    check_ids_in_vocab(in.ids, lo->input, model->config.vocab_size);
    torch::NoGradGuard ng;
    auto logits = model->forward(in.ids, nullptr, in.mask);
    safetensors_write(lo->output, {{"logits", logits.to(torch::kCPU)}},
                      {{"patchllm_provenance", provenance_json({lo->input}).dump()}, {"device", describe(opt)}});
  });
}

}  // namespace patchllm::cli
