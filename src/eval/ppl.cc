#include "eval/ppl.h"

#include <cmath>

#include "core/error.h"
#include "core/log.h"

namespace patchllm {

nlohmann::json PplResult::to_json() const {
  return {{"protocol", "paper"},
          {"join", "file as is, tokenized once, BOS once"},
          {"seq_len", ctx},
          {"stride", ctx},
          {"scored_positions", "all"},
          {"n_tokens", n_tokens},
          {"n_windows", n_windows},
          {"n_scored", n_scored},
          {"nll_mean", nll_mean},
          {"ppl", ppl},
          {"ppl_stderr", ppl_stderr},
          {"seconds", seconds}};
}

PplResult ppl_evaluate(Model& model, const std::vector<int>& tokens, const PplOptions& opt) {
  PplResult r;
  r.ctx = opt.ctx > 0 ? opt.ctx : std::min<int64_t>(4096, model.config.max_position);
  PATCHLLM_CHECK(r.ctx >= 2, InvalidArgument, "context size must be >= 2, got ", r.ctx);
  PATCHLLM_CHECK(r.ctx <= model.config.max_position || model.config.rope_scaling.type != "none", InvalidArgument,
                 "context ", r.ctx, " exceeds the model's max_position_embeddings ", model.config.max_position);
  r.n_tokens = static_cast<int64_t>(tokens.size());
  r.n_windows = r.n_tokens / r.ctx;
  if (opt.max_windows > 0) r.n_windows = std::min(r.n_windows, opt.max_windows);
  PATCHLLM_CHECK(r.n_windows > 0, InvalidArgument, "text has ", r.n_tokens, " tokens, fewer than one window of ", r.ctx);
  torch::NoGradGuard ng;
  auto all = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + r.n_windows * r.ctx))
                 .view({r.n_windows, r.ctx});
  double sum = 0, sum2 = 0;
  const int64_t B = std::max<int64_t>(1, opt.batch);
  Progress prog("ppl", r.n_windows);
  double t0 = now_seconds();
  for (int64_t w = 0; w < r.n_windows; w += B) {
    int64_t b = std::min(B, r.n_windows - w);
    auto x = all.narrow(0, w, b).to(model.device);
    auto logits = model.forward(x);  // [b, ctx, V] fp32
    auto logp = torch::log_softmax(logits.narrow(1, 0, r.ctx - 1), -1);
    auto nll = -logp.gather(-1, x.narrow(1, 1, r.ctx - 1).unsqueeze(-1)).squeeze(-1).to(torch::kFloat64);
    sum += nll.sum().item<double>();
    sum2 += nll.pow(2).sum().item<double>();
    r.n_scored += nll.numel();
    prog.update(w + b, str("ppl ", std::exp(sum / r.n_scored)));
  }
  r.seconds = now_seconds() - t0;
  r.nll_mean = sum / r.n_scored;
  r.nll_std = std::sqrt(std::max(0.0, sum2 / r.n_scored - r.nll_mean * r.nll_mean));
  r.ppl = std::exp(r.nll_mean);
  // Token NLLs within a window are correlated, so this standard error is optimistic; reported as llama.cpp does.
  r.ppl_stderr = r.ppl * r.nll_std / std::sqrt(static_cast<double>(r.n_scored));
  return r;
}

}  // namespace patchllm
