#include "eval/ppl.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"

namespace patchllm {

nlohmann::json PplResult::to_json() const {
  return {{"protocol", "paper"},
          {"join", "file as is, tokenized once, BOS once"},
          {"seq_len", ctx},
          {"stride", ctx},
          {"scored_positions", "all"},
          {"n_tokens", n_tokens},
          {"ids_sha256_int32le", ids_sha256},
          {"n_windows", n_windows},
          {"n_scored", n_scored},
          {"nll_mean", nll_mean},
          {"ppl", ppl},
          {"ppl_stderr", ppl_stderr},
          {"head_rows", head_rows},
          {"seconds", seconds}};
}

nlohmann::json PplState::to_json() const {
  // nlohmann writes doubles with 17 significant digits: the sums read back exactly.
  return {{"windows", windows}, {"n_scored", n_scored}, {"sum", sum}, {"sum2", sum2}, {"seconds", seconds}};
}

PplState PplState::from_json(const nlohmann::json& j, const std::string& origin) {
  for (const char* k : {"windows", "n_scored", "sum", "sum2", "seconds"})
    PATCHLLM_CHECK(j.is_object() && j.contains(k) && j[k].is_number(), FormatError, origin, ": perplexity state has no "
                   "number \"", k, "\"");
  // Counts as integers (a float such as 1e300 would not convert), never negative.
  for (const char* k : {"windows", "n_scored"})
    PATCHLLM_CHECK(j[k].is_number_integer() && j[k].get<int64_t>() >= 0, FormatError, origin, ": perplexity state: \"",
                   k, "\" is not a count");
  PplState s;
  s.windows = j["windows"].get<int64_t>();
  s.n_scored = j["n_scored"].get<int64_t>();
  s.sum = j["sum"].get<double>();
  s.sum2 = j["sum2"].get<double>();
  s.seconds = j["seconds"].get<double>();
  return s;
}

PplState ppl_partial_read(const std::string& path, const nlohmann::json& run) {
  const nlohmann::json p = partial_read(path, run);
  PATCHLLM_CHECK(p.contains("state"), FormatError, path, ": no \"state\"");
  return PplState::from_json(p["state"], path);
}

std::string token_ids_sha256(const std::vector<int>& ids) {
  std::string buf(ids.size() * 4, '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint32_t u = static_cast<uint32_t>(ids[i]);
    for (int k = 0; k < 4; ++k) buf[4 * i + k] = static_cast<char>((u >> (8 * k)) & 0xff);
  }
  return sha256_hex(buf.data(), buf.size());
}

torch::Tensor token_nll(const torch::Tensor& logits, const torch::Tensor& targets) {
  PATCHLLM_CHECK(logits.dim() == 2 && targets.dim() == 2 && targets.size(0) == logits.size(0) && targets.size(1) == 1,
                 InvalidArgument, "token_nll: logits [n, V] and targets [n, 1], got ", logits.sizes(), " and ",
                 targets.sizes());
  const int64_t n = logits.size(0);
  auto x = logits.to(torch::kFloat32);
  auto mx = std::get<0>(x.max(-1, /*keepdim=*/true));  // [n, 1]
  auto lse = torch::empty({n}, x.options().dtype(torch::kFloat64));
  // 64 rows at a time: the fp64 copy of the exponentials is 64 x V x 8 bytes (134 MB at V = 262 144).
  for (int64_t r = 0; r < n; r += 64) {
    const int64_t m = std::min<int64_t>(64, n - r);
    auto mr = mx.narrow(0, r, m);
    auto sum = (x.narrow(0, r, m) - mr).exp().to(torch::kFloat64).sum(-1);
    lse.narrow(0, r, m).copy_(sum.log() + mr.squeeze(-1).to(torch::kFloat64));
  }
  return lse - x.gather(-1, targets).squeeze(-1).to(torch::kFloat64);
}

PplResult ppl_evaluate(Model& model, const std::vector<int>& tokens, const PplOptions& opt) {
  PplResult r;
  r.ctx = opt.ctx > 0 ? opt.ctx : std::min<int64_t>(4096, model.config.max_position);
  PATCHLLM_CHECK(r.ctx >= 2, InvalidArgument, "context size must be >= 2, got ", r.ctx);
  PATCHLLM_CHECK(r.ctx <= model.config.max_position || model.config.rope_scaling.type != "none", InvalidArgument,
                 "context ", r.ctx, " exceeds the model's max_position_embeddings ", model.config.max_position);
  PATCHLLM_CHECK(opt.head_rows >= 0, InvalidArgument, "head rows must be >= 0 (0 = all at once), got ", opt.head_rows);
  r.n_tokens = static_cast<int64_t>(tokens.size());
  r.ids_sha256 = token_ids_sha256(tokens);
  r.head_rows = opt.head_rows;
  r.n_windows = r.n_tokens / r.ctx;
  if (opt.max_windows > 0) r.n_windows = std::min(r.n_windows, opt.max_windows);
  PATCHLLM_CHECK(r.n_windows > 0, InvalidArgument, opt.source.empty() ? std::string() : opt.source + ": ", "text has ",
                 r.n_tokens, " tokens, fewer than one window of ", r.ctx);
  torch::NoGradGuard ng;
  auto all = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + r.n_windows * r.ctx))
                 .view({r.n_windows, r.ctx});
  const int64_t B = std::max<int64_t>(1, opt.batch);
  const PplState& from = opt.resume;
  PATCHLLM_CHECK(from.windows >= 0 && from.windows <= r.n_windows && (from.windows % B == 0 || from.windows == r.n_windows),
                 InvalidArgument, "perplexity resume at window ", from.windows, ": not a whole number of batches of ", B,
                 " within ", r.n_windows, " windows");
  double sum = from.sum, sum2 = from.sum2;
  r.n_scored = from.n_scored;
  Progress prog("ppl", r.n_windows);
  double t0 = now_seconds() - from.seconds;
  const int64_t S = r.ctx - 1;  // scored positions per window
  for (int64_t w = from.windows; w < r.n_windows; w += B) {
    int64_t b = std::min(B, r.n_windows - w);
    auto x = all.narrow(0, w, b).to(model.device);
    auto h = model.hidden(x);  // the head goes chunk by chunk below
    const int64_t rows = b * S;
    h = h.narrow(1, 0, S).reshape({rows, h.size(-1)});
    auto tgt = x.narrow(1, 1, S).reshape({rows, 1});
    const int64_t step = opt.head_rows > 0 ? opt.head_rows : rows;
    for (int64_t s = 0; s < rows; s += step) {
      const int64_t n = std::min(step, rows - s);
      auto nll = token_nll(model.head(h.narrow(0, s, n)), tgt.narrow(0, s, n));  // [n] fp64
      sum += nll.sum().item<double>();
      sum2 += nll.pow(2).sum().item<double>();
      r.n_scored += n;
    }
    prog.update(w + b, str("ppl ", std::exp(sum / r.n_scored)));
    if (opt.checkpoint && !opt.checkpoint(PplState{w + b, r.n_scored, sum, sum2, now_seconds() - t0}) &&
        w + b < r.n_windows) {
      r.stopped = true;
      r.n_windows = w + b;  // the windows done, no estimate
      r.seconds = now_seconds() - t0;
      return r;
    }
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
