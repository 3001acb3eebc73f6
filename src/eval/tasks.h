// Zero-shot task evaluation with lm-evaluation-harness conventions (0-shot, log-likelihood scoring) on the JSONL task
// files of ../shared/data/tasks (llm-foundry's local_data; SOURCE.md there gives the formats):
//   multiple choice (piqa, arc_easy, arc_challenge, openbook_qa, boolq): {"query", "choices", "gold"}; each choice is
//     scored as the continuation of query + delimiter ("\nAnswer: ", openbook_qa " "); acc and acc_norm.
//   winogrande: {"context_options", "continuation", "gold"}; the shared continuation after each context, joined by
//     one space (partial scoring); acc.
//   lambada_openai: {"context", "continuation"}; one space before the final word; acc = the greedy tokens reproduce
//     every continuation token; perplexity = exp(-mean per-row log-likelihood), as lm-eval reports it.
// Each (context, continuation) pair is encoded as lm-eval's _encode_pair does: trailing whitespace of the context is
// moved to the continuation, whole = tok(context + continuation), ctx = tok(context), continuation tokens =
// whole[len(ctx):], the model input is ctx + continuation tokens without the last one (left-truncated to the model's
// maximum length). tok() adds special tokens as HF tokenizer(text) does for the model (BOS for LLaMA-2, none for
// Qwen2.5), the same rule as eval ppl; lm-eval's HFLM adds none by default for most models, so for BOS-adding
// tokenizers its numbers may differ slightly from ours.
#pragma once
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/log.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace patchllm {

enum class TaskKind { MULTIPLE_CHOICE, WINOGRANDE, LAMBADA };

// One row: its (context, continuation) requests as written (before whitespace moves), one per choice.
struct TaskRow {
  int64_t line = 0;  // 1-based line in the file, for messages and --log-samples
  std::vector<std::pair<std::string, std::string>> requests;
  std::vector<std::string> choices;  // multiple choice: the choice texts (acc_norm divides by their length)
  int gold = -1;                     // -1 for lambada
};

struct Task {
  std::string name, path;
  TaskKind kind = TaskKind::MULTIPLE_CHOICE;
  std::vector<TaskRow> rows;
};

// The seven task names, in the default evaluation order.
const std::vector<std::string>& task_names();
// Reads `path` as task `name` (which fixes format and delimiter); limit > 0 keeps the first `limit` rows.
// Errors (FormatError) name the file, and for a bad row the line: "<path>:<line>: <problem>".
Task task_load(const std::string& name, const std::string& path, int64_t limit = 0);

struct TaskTokens {
  std::vector<int> context, continuation;
};
// lm-eval's _encode_pair (see the top of this file).
TaskTokens task_encode_pair(const Tokenizer& tok, const std::string& context, const std::string& continuation);

struct TaskLoglik {
  double loglik = 0;       // sum of log p(continuation tokens), fp64 log-sum-exp
  bool is_greedy = false;  // argmax of the logits equals every continuation token
};

struct TaskOptions {
  int64_t batch = 8;    // sequences per forward
  int64_t max_len = 0;  // 0 = the model's max_position_embeddings
  bool log_samples = false;
  // Resuming a task stopped in the middle: the first resume_batches batches of task_loglik's order are not scored
  // again; their results come from resume_ll (one entry per pair, in the order of the pairs).
  int64_t resume_batches = 0;
  std::vector<TaskLoglik> resume_ll;
  // Called after each batch is scored with the batches done so far and every pair's result (those of pairs not yet
  // scored are zero): what a partial file keeps so that a stopped task can resume. It may throw to stop the task.
  std::function<void(int64_t batches, const std::vector<TaskLoglik>& ll)> after_batch;
};

// Scores every pair: sequences sorted by length (longest first, so the padding per batch stays small and a memory
// problem shows at once), right-padded `batch` at a time. Results are in the order of `pairs`. A non-null progress
// is advanced by one per pair.
std::vector<TaskLoglik> task_loglik(Model& model, const std::vector<TaskTokens>& pairs, const TaskOptions& opt,
                                    Progress* progress = nullptr);

struct TaskResult {
  std::string name;
  int64_t n = 0;
  double acc = 0, acc_stderr = 0;
  double acc_norm = -1, acc_norm_stderr = -1;  // multiple choice only
  double ppl = -1;                             // lambada only
  double seconds = 0;
  nlohmann::json samples = nlohmann::json::array();  // per row, with TaskOptions::log_samples
  nlohmann::json to_json() const;                    // lm-eval keys: "acc,none", "acc_stderr,none", ...
  // The inverse of to_json (samples apart), for results read back from a stopped run's file (eval tasks --resume);
  // FormatError naming `origin` when a key is missing or of the wrong type.
  static TaskResult from_json(const std::string& name, const nlohmann::json& j, const std::string& origin);
};

// Length normalisation of acc_norm: the choice's length in Unicode code points, as lm-eval's len(choice) in Python
// (its docs call it byte length; the code counts characters; they differ only for non-ASCII choices).
int64_t task_choice_length(const std::string& utf8);
// lm-eval's mean standard error: sqrt(p (1 - p) / (n - 1)); 0 for n < 2.
double task_stderr(double p, int64_t n);

TaskResult task_evaluate(Model& model, const Tokenizer& tok, const Task& task, const TaskOptions& opt);

// A stopped run's partial file: {"run", "done": {name: {"result", "samples"}}, "current": {"task", "batches",
// "loglik", "is_greedy"}} ("current": the task stopped in the middle, if any; TaskOptions::resume_*). Read with
// core/json partial_read, so refused unless written under `run`; FormatError naming the file when malformed.
struct TaskPartial {
  std::map<std::string, TaskResult> done;  // finished tasks, samples included, by name
  std::string current;                     // the task stopped in the middle ("" if none), and its state:
  int64_t batches = 0;
  std::vector<TaskLoglik> ll;
};
TaskPartial task_partial_read(const std::string& path, const nlohmann::json& run);
// The "current" entry for a task stopped after `batches` batches with results `ll`.
nlohmann::json task_current_json(const std::string& task, int64_t batches, const std::vector<TaskLoglik>& ll);

}  // namespace patchllm
