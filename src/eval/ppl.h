// Perplexity, the paper's protocol (SparseGPT / Wanda / MaskLLM / PATCH): the text tokenized once (BOS once at the
// start, as HF tokenizer(text) does), cut into non-overlapping windows of ctx tokens, the remainder dropped; every
// window is scored on its ctx-1 next-token predictions; PPL = exp(mean NLL over all scored tokens).
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "model/model.h"

namespace patchllm {

struct PplOptions {
  int64_t ctx = 0;          // 0 = min(4096, max_position_embeddings)
  int64_t batch = 1;        // windows per forward
  int64_t max_windows = 0;  // 0 = all (--chunks)
};

struct PplResult {
  int64_t ctx = 0, n_tokens = 0, n_windows = 0, n_scored = 0;
  double nll_mean = 0, nll_std = 0, ppl = 0, ppl_stderr = 0, seconds = 0;
  nlohmann::json to_json() const;
};

PplResult ppl_evaluate(Model& model, const std::vector<int>& tokens, const PplOptions& opt);

}  // namespace patchllm
