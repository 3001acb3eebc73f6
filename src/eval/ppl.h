// Perplexity, the paper's protocol (SparseGPT / Wanda / MaskLLM / PATCH): the text tokenized once (BOS once at the
// start, as HF tokenizer(text) does), cut into non-overlapping windows of ctx tokens, the remainder dropped; every
// window is scored on its ctx-1 next-token predictions; PPL = exp(mean NLL over all scored tokens).
// The LM head and log-softmax run head_rows positions at a time, so a window never holds its full [ctx, vocab] fp32
// logits (Gemma 3: 262k vocabulary, 4.3 GB per 4096-token window); each row's NLL is that of the full logits.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model.h"

namespace patchllm {

// Where a perplexity run stands: its first `windows` windows scored. The sums are what the result is computed from,
// so a run continued from a state (PplOptions::resume) gives the uninterrupted run's numbers exactly.
struct PplState {
  int64_t windows = 0, n_scored = 0;
  double sum = 0, sum2 = 0, seconds = 0;  // NLL sum, squared-NLL sum (fp64), time spent so far
  nlohmann::json to_json() const;
  // FormatError naming origin when a key is missing or not a number.
  static PplState from_json(const nlohmann::json& j, const std::string& origin);
};

struct PplOptions {
  int64_t ctx = 0;          // 0 = min(4096, max_position_embeddings)
  int64_t batch = 1;        // windows per forward
  int64_t max_windows = 0;  // 0 = all (--chunks)
  int64_t head_rows = 512;  // positions per LM-head + log-softmax chunk; 0 = all scored positions of the batch at once
  std::string source;       // the text's file, named in the too-short error (empty: none)
  PplState resume;          // continue after resume.windows windows (a multiple of batch, or all of them)
  // Called after every batch with the state so far (e.g. to save it); returning false stops the run there if windows
  // remain: ppl_evaluate then returns a result with stopped set, n_windows = the windows done and no estimate.
  std::function<bool(const PplState&)> checkpoint;
};

struct PplResult {
  int64_t ctx = 0, n_tokens = 0, n_windows = 0, n_scored = 0;
  double nll_mean = 0, nll_std = 0, ppl = 0, ppl_stderr = 0, seconds = 0;
  int64_t head_rows = 0;
  bool stopped = false;    // PplOptions::checkpoint stopped the run before its last window
  std::string ids_sha256;  // sha256 of all n_tokens ids as int32 little-endian (tools/ppl_transformers.py's too)
  nlohmann::json to_json() const;
};

// sha256 (hex) of the ids written as int32 little-endian, 4 bytes each, whatever the host's byte order.
std::string token_ids_sha256(const std::vector<int>& ids);

// Negative log-likelihood of targets [n, 1] (int64) under logits [n, V] (fp32): [n] fp64. The log-sum-exp sums
// the max-shifted exponentials in fp64: an fp32 log-softmax (LibTorch 1.13 CPU) drifts low by ~1e-5 at a 152k and
// ~3e-5 at a 262k vocabulary, which showed as a 3e-5 relative NLL offset against transformers on Qwen2.5.
torch::Tensor token_nll(const torch::Tensor& logits, const torch::Tensor& targets);

PplResult ppl_evaluate(Model& model, const std::vector<int>& tokens, const PplOptions& opt);
// The state in a stopped run's partial file (core/json partial_read: refused unless written under `run`).
PplState ppl_partial_read(const std::string& path, const nlohmann::json& run);

}  // namespace patchllm
