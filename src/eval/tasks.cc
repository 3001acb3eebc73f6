#include "eval/tasks.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "eval/ppl.h"

namespace patchllm {

namespace {

struct TaskSpec {
  const char* name;
  TaskKind kind;
  const char* delimiter;  // between query and choice (multiple choice)
};

// Delimiters from llm-foundry's scripts/eval/yamls/tasks_v0.3.yaml (continuation_delimiter; its default is " ").
const std::vector<TaskSpec>& task_specs() {
  static const std::vector<TaskSpec> specs = {
      {"piqa", TaskKind::MULTIPLE_CHOICE, "\nAnswer: "},
      {"arc_easy", TaskKind::MULTIPLE_CHOICE, "\nAnswer: "},
      {"arc_challenge", TaskKind::MULTIPLE_CHOICE, "\nAnswer: "},
      {"openbook_qa", TaskKind::MULTIPLE_CHOICE, " "},
      {"boolq", TaskKind::MULTIPLE_CHOICE, "\nAnswer: "},
      {"winogrande", TaskKind::WINOGRANDE, ""},
      {"lambada_openai", TaskKind::LAMBADA, ""},
  };
  return specs;
}

// Typed access to one row's keys; every failure names "<path>:<line>" and the key.
struct RowReader {
  const nlohmann::json& j;
  const std::string& where;

  const nlohmann::json& at(const char* key) const {
    auto it = j.find(key);
    PATCHLLM_CHECK(it != j.end(), FormatError, where, ": missing key \"", key, "\"");
    return *it;
  }
  std::string string(const char* key) const {
    const auto& v = at(key);
    PATCHLLM_CHECK(v.is_string(), FormatError, where, ": key \"", key, "\" is not a string");
    return v.get<std::string>();
  }
  std::vector<std::string> strings(const char* key, size_t min_size) const {
    const auto& v = at(key);
    PATCHLLM_CHECK(v.is_array() && v.size() >= min_size, FormatError, where, ": key \"", key,
                   "\" is not an array of at least ", min_size, " strings");
    std::vector<std::string> out;
    for (const auto& e : v) {
      PATCHLLM_CHECK(e.is_string(), FormatError, where, ": key \"", key, "\" holds a non-string");
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  int gold(size_t n_options) const {
    const auto& v = at("gold");
    PATCHLLM_CHECK(v.is_number_integer(), FormatError, where, ": key \"gold\" is not an integer");
    const int64_t g = v.get<int64_t>();
    PATCHLLM_CHECK(g >= 0 && g < static_cast<int64_t>(n_options), FormatError, where, ": gold ", g,
                   " is out of range for ", n_options, " options");
    return static_cast<int>(g);
  }
};

}  // namespace

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& s : task_specs()) n.push_back(s.name);
    return n;
  }();
  return names;
}

Task task_load(const std::string& name, const std::string& path, int64_t limit) {
  const TaskSpec* spec = nullptr;
  for (const auto& s : task_specs())
    if (name == s.name) spec = &s;
  if (!spec) {
    std::string known;
    for (const auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
    throw InvalidArgument(str("unknown task '", name, "' (known: ", known, ")"));
  }
  PATCHLLM_CHECK(file_exists(path), FormatError, path, ": task file not found");
  const std::string text = file_read(path);
  Task t;
  t.name = name;
  t.path = path;
  t.kind = spec->kind;
  jsonl_for_each(path, text, [&](int64_t line, const std::string& where, const nlohmann::json& j, const std::string&) {
    RowReader r{j, where};
    TaskRow row;
    row.line = line;
    switch (spec->kind) {
      case TaskKind::MULTIPLE_CHOICE: {
        const std::string ctx = r.string("query") + spec->delimiter;
        row.choices = r.strings("choices", 1);
        for (const auto& c : row.choices)  // acc_norm divides by the choice's length
          PATCHLLM_CHECK(!c.empty(), FormatError, where, ": an empty choice");
        row.gold = r.gold(row.choices.size());
        for (const auto& c : row.choices) row.requests.emplace_back(ctx, c);
        break;
      }
      case TaskKind::WINOGRANDE: {
        const auto options = r.strings("context_options", 2);
        const std::string cont = r.string("continuation");
        row.gold = r.gold(options.size());
        for (const auto& o : options) row.requests.emplace_back(o + " ", cont);
        break;
      }
      case TaskKind::LAMBADA: row.requests.emplace_back(r.string("context") + " ", r.string("continuation")); break;
    }
    t.rows.push_back(std::move(row));
    return limit <= 0 || static_cast<int64_t>(t.rows.size()) < limit;
  });
  PATCHLLM_CHECK(!t.rows.empty(), FormatError, path, ": no rows");
  return t;
}

TaskTokens task_encode_pair(const Tokenizer& tok, const std::string& context, const std::string& continuation) {
  // lm-eval moves trailing whitespace (Python str.rstrip(), ASCII part) into the continuation, so "Answer: " + "yes"
  // is scored as "Answer:" + " yes": the space belongs to the answer's first token in BPE vocabularies.
  size_t keep = context.find_last_not_of(" \t\n\r\v\f");
  keep = keep == std::string::npos ? 0 : keep + 1;
  const std::string ctx = context.substr(0, keep);
  const std::string cont = context.substr(keep) + continuation;
  TaskTokens t;
  t.context = tok.encode(ctx, true);
  const auto whole = tok.encode(ctx + cont, true);
  // whole[len(ctx):], not tok(cont): the continuation is tokenized in context, as lm-eval does.
  PATCHLLM_CHECK(whole.size() > t.context.size(), InvalidArgument, "continuation '", cont,
                 "' adds no tokens after its context");
  t.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(t.context.size()), whole.end());
  return t;
}

std::vector<TaskLoglik> task_loglik(Model& model, const std::vector<TaskTokens>& pairs, const TaskOptions& opt,
                                    Progress* progress) {
  const int64_t max_len = opt.max_len > 0 ? opt.max_len : model.config.max_position;
  const int64_t B = std::max<int64_t>(1, opt.batch);
  const size_t n = pairs.size();
  // Model input per pair: (context + continuation)[-(max_len + 1):][:-1], lm-eval's left truncation.
  std::vector<int64_t> in_len(n), start(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t full = static_cast<int64_t>(pairs[i].context.size() + pairs[i].continuation.size());
    const int64_t nc = static_cast<int64_t>(pairs[i].continuation.size());
    PATCHLLM_CHECK(nc >= 1 && nc <= max_len, InvalidArgument, "continuation of ", nc,
                   " tokens does not fit the maximum length ", max_len);
    in_len[i] = std::min(full, max_len + 1) - 1;
    start[i] = full - 1 - in_len[i];
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return in_len[a] > in_len[b]; });
  std::vector<TaskLoglik> out(n);
  torch::NoGradGuard ng;
  SdpaCudnnOff no_cudnn_plans(model.device);  // nearly every batch has a new length: a new attention shape
  size_t done = 0;
  if (opt.resume_batches > 0) {  // batches are independent, so the resumed task scores what the whole run would
    PATCHLLM_CHECK(opt.resume_ll.size() == n, InvalidArgument, "resume state has ", opt.resume_ll.size(),
                   " results for a task of ", n, " requests");
    out = opt.resume_ll;
    done = std::min(n, static_cast<size_t>(opt.resume_batches) * static_cast<size_t>(B));
    if (progress) progress->update(static_cast<long>(done));
  }
  for (size_t o = done; o < n; o += static_cast<size_t>(B)) {
    const int64_t b = std::min<int64_t>(B, static_cast<int64_t>(n - o));
    const int64_t T = in_len[order[o]];  // longest of the batch
    // Right padding with token 0 and no attention mask: attention is causal, so a real token never sees the padding
    // after it and its logits equal those of the unpadded sequence; the padded positions are never read.
    std::vector<int64_t> ids(static_cast<size_t>(b * T), 0);
    std::vector<int64_t> rows, targets;  // flat [b*T] positions whose logits score a continuation token
    for (int64_t j = 0; j < b; ++j) {
      const size_t i = order[o + static_cast<size_t>(j)];
      const auto& p = pairs[i];
      auto tok_at = [&](int64_t k) {  // k-th token of context + continuation
        const int64_t nctx = static_cast<int64_t>(p.context.size());
        return static_cast<int64_t>(k < nctx ? p.context[static_cast<size_t>(k)]
                                             : p.continuation[static_cast<size_t>(k - nctx)]);
      };
      for (int64_t t = 0; t < in_len[i]; ++t) ids[static_cast<size_t>(j * T + t)] = tok_at(start[i] + t);
      const int64_t nc = static_cast<int64_t>(p.continuation.size());
      for (int64_t k = 0; k < nc; ++k) {
        rows.push_back(j * T + in_len[i] - nc + k);  // the logits at input position L-nc+k predict continuation[k]
        targets.push_back(p.continuation[static_cast<size_t>(k)]);
      }
    }
    auto x = torch::tensor(ids).view({b, T}).to(model.device);
    auto h = model.hidden(x);
    // The LM head only on the scored rows: continuations are a few tokens of sequences of tens to hundreds.
    auto idx = torch::tensor(rows).to(model.device);
    auto logits = model.head(h.reshape({b * T, h.size(-1)}).index_select(0, idx));  // [R, V] fp32
    auto tgt = torch::tensor(targets).to(model.device).view({-1, 1});
    auto nll = token_nll(logits, tgt).cpu();
    auto hit = logits.argmax(-1).view({-1, 1}).eq(tgt).view({-1}).cpu();
    const double* nll_p = nll.data_ptr<double>();
    const bool* hit_p = hit.data_ptr<bool>();
    size_t r = 0;
    for (int64_t j = 0; j < b; ++j) {
      const size_t i = order[o + static_cast<size_t>(j)];
      TaskLoglik& res = out[i];
      res = TaskLoglik{};
      res.is_greedy = true;
      for (size_t k = 0; k < pairs[i].continuation.size(); ++k, ++r) {
        res.loglik -= nll_p[r];
        res.is_greedy = res.is_greedy && hit_p[r];
      }
    }
    done += static_cast<size_t>(b);
    if (progress) progress->update(static_cast<long>(done));
    if (opt.after_batch)
      opt.after_batch(static_cast<int64_t>((done + static_cast<size_t>(B) - 1) / static_cast<size_t>(B)), out);
  }
  return out;
}

int64_t task_choice_length(const std::string& utf8) {
  int64_t n = 0;
  for (unsigned char c : utf8) n += (c & 0xC0) != 0x80;  // count lead bytes, not continuation bytes
  return n;
}

double task_stderr(double p, int64_t n) { return n < 2 ? 0.0 : std::sqrt(p * (1 - p) / static_cast<double>(n - 1)); }

nlohmann::json TaskResult::to_json() const {
  nlohmann::json j = {{"alias", name}, {"n", n}, {"acc,none", acc}, {"acc_stderr,none", acc_stderr}};
  if (acc_norm >= 0) {
    j["acc_norm,none"] = acc_norm;
    j["acc_norm_stderr,none"] = acc_norm_stderr;
  }
  if (ppl >= 0) j["perplexity,none"] = ppl;
  j["seconds"] = seconds;
  return j;
}

TaskResult TaskResult::from_json(const std::string& name, const nlohmann::json& j, const std::string& origin) {
  auto num = [&](const char* key, double fallback, bool required) {
    if (!j.is_object() || !j.contains(key)) {
      PATCHLLM_CHECK(!required, FormatError, origin, ": result of task '", name, "' has no \"", key, "\"");
      return fallback;
    }
    PATCHLLM_CHECK(j[key].is_number(), FormatError, origin, ": result of task '", name, "': \"", key,
                   "\" is not a number");
    return j[key].get<double>();
  };
  TaskResult r;
  r.name = name;
  num("n", 0, true);
  PATCHLLM_CHECK(j["n"].is_number_integer() && j["n"].get<int64_t>() >= 0, FormatError, origin, ": result of task '",
                 name, "': \"n\" is not a count");
  r.n = j["n"].get<int64_t>();
  r.acc = num("acc,none", 0, true);
  r.acc_stderr = num("acc_stderr,none", 0, true);
  r.acc_norm = num("acc_norm,none", -1, false);
  r.acc_norm_stderr = num("acc_norm_stderr,none", -1, false);
  r.ppl = num("perplexity,none", -1, false);
  r.seconds = num("seconds", 0, false);
  return r;
}

nlohmann::json task_current_json(const std::string& task, int64_t batches, const std::vector<TaskLoglik>& ll) {
  std::vector<double> loglik;
  std::vector<bool> greedy;
  for (const auto& r : ll) loglik.push_back(r.loglik), greedy.push_back(r.is_greedy);
  return {{"task", task}, {"batches", batches}, {"loglik", loglik}, {"is_greedy", greedy}};
}

TaskPartial task_partial_read(const std::string& path, const nlohmann::json& run) {
  const nlohmann::json p = partial_read(path, run);
  PATCHLLM_CHECK(p.contains("done") && p["done"].is_object(), FormatError, path, ": no object \"done\"");
  TaskPartial out;
  for (const auto& [name, e] : p["done"].items()) {
    PATCHLLM_CHECK(e.is_object() && e.contains("result") && e.contains("samples") && e["samples"].is_array(),
                   FormatError, path, ": entry of task '", name, "' is malformed; delete the file to start over");
    TaskResult r = TaskResult::from_json(name, e["result"], path);
    r.samples = e["samples"];
    out.done.emplace(name, std::move(r));
  }
  if (p.contains("current")) {
    const auto& c = p["current"];
    int64_t batches = 0;
    PATCHLLM_CHECK(c.is_object() && c.contains("task") && c["task"].is_string() && c.contains("batches") &&
                       json_int_in(c["batches"], 0, INT64_MAX / 1024, &batches) && c.contains("loglik") &&
                       c["loglik"].is_array() && c.contains("is_greedy") && c["is_greedy"].is_array() &&
                       c["loglik"].size() == c["is_greedy"].size(),
                   FormatError, path, ": \"current\" is malformed; delete the file to start over");
    out.current = c["task"].get<std::string>();
    out.batches = batches;
    for (size_t i = 0; i < c["loglik"].size(); ++i) {
      PATCHLLM_CHECK(c["loglik"][i].is_number() && c["is_greedy"][i].is_boolean(), FormatError, path,
                     ": \"current\" holds a result that is not a number and a flag; delete the file to start over");
      out.ll.push_back({c["loglik"][i].get<double>(), c["is_greedy"][i].get<bool>()});
    }
  }
  return out;
}

TaskResult task_evaluate(Model& model, const Tokenizer& tok, const Task& task, const TaskOptions& opt) {
  const double t0 = now_seconds();
  std::vector<TaskTokens> pairs;
  for (const auto& row : task.rows)
    for (const auto& rq : row.requests) {
      try {
        pairs.push_back(task_encode_pair(tok, rq.first, rq.second));
      } catch (const InvalidArgument& e) {
        throw FormatError(str(task.path, ":", row.line, ": ", e.what()));
      }
    }
  Progress prog(task.name, static_cast<long>(pairs.size()));
  const auto ll = task_loglik(model, pairs, opt, &prog);
  TaskResult r;
  r.name = task.name;
  r.n = static_cast<int64_t>(task.rows.size());
  double correct = 0, correct_norm = 0, ll_sum = 0;
  size_t k = 0;
  for (const auto& row : task.rows) {
    nlohmann::json s = {{"line", row.line}};
    const size_t m = row.requests.size();
    if (task.kind == TaskKind::LAMBADA) {
      correct += ll[k].is_greedy;
      ll_sum += ll[k].loglik;
      s["loglik"] = ll[k].loglik;
      s["is_greedy"] = ll[k].is_greedy;
    } else {
      // np.argmax: the first maximum wins ties.
      size_t pred = 0, pred_norm = 0;
      std::vector<double> lls(m);
      for (size_t c = 0; c < m; ++c) lls[c] = ll[k + c].loglik;
      for (size_t c = 1; c < m; ++c)
        if (lls[c] > lls[pred]) pred = c;
      correct += static_cast<int>(pred) == row.gold;
      s["gold"] = row.gold;
      s["pred"] = pred;
      s["logliks"] = lls;
      if (task.kind == TaskKind::MULTIPLE_CHOICE) {
        auto norm = [&](size_t c) { return lls[c] / static_cast<double>(task_choice_length(row.choices[c])); };
        for (size_t c = 1; c < m; ++c)
          if (norm(c) > norm(pred_norm)) pred_norm = c;
        correct_norm += static_cast<int>(pred_norm) == row.gold;
        s["pred_norm"] = pred_norm;
      }
    }
    k += m;
    if (opt.log_samples) r.samples.push_back(std::move(s));
  }
  r.acc = correct / static_cast<double>(r.n);
  r.acc_stderr = task_stderr(r.acc, r.n);
  if (task.kind == TaskKind::MULTIPLE_CHOICE) {
    r.acc_norm = correct_norm / static_cast<double>(r.n);
    r.acc_norm_stderr = task_stderr(r.acc_norm, r.n);
  }
  if (task.kind == TaskKind::LAMBADA) r.ppl = std::exp(-ll_sum / static_cast<double>(r.n));
  r.seconds = now_seconds() - t0;
  prog.finish(str("acc ", r.acc));
  return r;
}

}  // namespace patchllm
