// Magnitude, Wanda and SparseGPT, and the layer-by-layer calibration driver.
#include "prune/prune.h"

#include <random>

#include "core/error.h"
#include "core/log.h"
#include "model/packed_linear.h"

namespace patchllm {

void prune_check_pattern(const std::string& pattern, double sparsity) {
  PATCHLLM_CHECK(pattern == "2:4" || pattern == "unstructured", InvalidArgument, "--pattern ", pattern,
                 ": unknown (2:4 | unstructured)");
  PATCHLLM_CHECK(sparsity >= 0 && sparsity < 1, InvalidArgument, "--sparsity ", sparsity, ": must be in [0, 1)");
}

namespace {

void check_pattern(const std::string& pattern, double s, int64_t in) {
  prune_check_pattern(pattern, pattern == "2:4" ? 0.5 : s);  // 2:4 ignores s
  if (pattern == "2:4")
    PATCHLLM_CHECK(in % 4 == 0, InvalidArgument, "2:4 needs in_features divisible by 4, got ", in);
}

// A Linear that accumulates statistics of its inputs, then computes as the wrapped one.
// full: H += xᵀx [in, in] fp32; otherwise col_sq += Σ x_j² [in].
class CaptureLinear : public Linear {
 public:
  CaptureLinear(const LinearPtr& inner, bool full) : Linear(inner->weight, inner->bias), _inner(inner), _full(full) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    auto xf = x.reshape({-1, x.size(-1)}).to(torch::kFloat32);
    if (_full) {
      auto h = torch::matmul(xf.t(), xf);
      acc = acc.defined() ? acc + h : h;
    } else {
      auto c = xf.pow(2).sum(0);
      acc = acc.defined() ? acc + c : c;
    }
    count += xf.size(0);
    return _inner->forward(x);
  }
  torch::Tensor acc;
  int64_t count = 0;

 private:
  LinearPtr _inner;
  bool _full;
};

}  // namespace

torch::Tensor prune_select_24(const torch::Tensor& score) {
  int64_t out = score.size(0), in = score.size(1);
  PATCHLLM_CHECK(in % 4 == 0, InvalidArgument, "2:4 needs in_features divisible by 4, got ", in);
  auto g = score.to(torch::kFloat32).reshape({out, in / 4, 4});
  auto idx = std::get<1>(torch::topk(g, 2, /*dim=*/2, /*largest=*/true, /*sorted=*/false));
  auto keep = torch::zeros({out, in / 4, 4}, torch::TensorOptions().dtype(torch::kBool).device(score.device()));
  keep.scatter_(2, idx, true);
  return keep.view({out, in});
}

torch::Tensor prune_select_rows(const torch::Tensor& score, double s) {
  int64_t out = score.size(0), in = score.size(1), k = static_cast<int64_t>(in * s);
  auto keep = torch::ones({out, in}, torch::TensorOptions().dtype(torch::kBool).device(score.device()));
  if (k == 0) return keep;
  auto idx = std::get<1>(torch::topk(score.to(torch::kFloat32), k, 1, /*largest=*/false, /*sorted=*/false));
  keep.scatter_(1, idx, false);
  return keep;
}

torch::Tensor prune_select_matrix(const torch::Tensor& score, double s) {
  int64_t n = score.numel(), k = static_cast<int64_t>(n * s);
  auto keep = torch::ones({n}, torch::TensorOptions().dtype(torch::kBool).device(score.device()));
  if (k > 0) {
    auto idx = std::get<1>(torch::topk(score.to(torch::kFloat32).reshape(-1), k, 0, /*largest=*/false, false));
    keep.scatter_(0, idx, false);
  }
  return keep.view(score.sizes());
}

torch::Tensor prune_magnitude(const torch::Tensor& w, const std::string& pattern, double s) {
  check_pattern(pattern, s, w.size(1));
  auto score = w.abs().to(torch::kFloat32);
  return pattern == "2:4" ? prune_select_24(score) : prune_select_matrix(score, s);
}

torch::Tensor prune_wanda(const torch::Tensor& w, const torch::Tensor& col_sq, const std::string& pattern, double s) {
  check_pattern(pattern, s, w.size(1));
  PATCHLLM_CHECK(col_sq.numel() == w.size(1), InvalidArgument, "wanda: input statistics have ", col_sq.numel(),
                 " columns, weight has ", w.size(1));
  auto score = w.abs().to(torch::kFloat32) * col_sq.to(w.device()).to(torch::kFloat32).sqrt().view({1, -1});
  return pattern == "2:4" ? prune_select_24(score) : prune_select_rows(score, s);
}

torch::Tensor prune_sparsegpt(torch::Tensor& W, torch::Tensor H, const std::string& pattern, double s,
                              int64_t blocksize, double damp) {
  const int64_t rows = W.size(0), cols = W.size(1);
  check_pattern(pattern, s, cols);
  PATCHLLM_CHECK(W.scalar_type() == torch::kFloat32, InvalidArgument, "sparsegpt: weight must be fp32");
  PATCHLLM_CHECK(H.size(0) == cols && H.size(1) == cols, InvalidArgument, "sparsegpt: H is ", H.sizes(),
                 ", weight has ", cols, " columns");
  H = H.to(torch::kFloat32).clone();
  auto dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.index_put_({torch::indexing::Slice(), dead}, 0.0);
  // Hinv = upper Cholesky factor of H⁻¹ (dampened); more damping if H is numerically not positive definite.
  torch::Tensor Hinv;
  double d = damp;
  for (int attempt = 0;; ++attempt) {
    auto Hd = H + d * H.diagonal().mean() * torch::eye(cols, H.options());
    auto [L, info] = torch::linalg_cholesky_ex(Hd);
    if (info.item<int>() == 0) {
      Hinv = torch::linalg_cholesky(torch::cholesky_inverse(L), /*upper=*/true);
      break;
    }
    PATCHLLM_CHECK(attempt < 4, InvalidArgument, "sparsegpt: Hessian not positive definite even with damping ", d);
    d *= 10;
    log_warn("sparsegpt: Hessian not positive definite, damping raised to ", d);
  }
  const int64_t prunen = pattern == "2:4" ? 2 : 0, prunem = 4;
  auto keep = torch::ones({rows, cols}, torch::TensorOptions().dtype(torch::kBool).device(W.device()));
  using torch::indexing::Slice;
  for (int64_t i1 = 0; i1 < cols; i1 += blocksize) {
    int64_t i2 = std::min(i1 + blocksize, cols), count = i2 - i1;
    auto W1 = W.index({Slice(), Slice(i1, i2)}).clone();
    auto Q1 = torch::zeros_like(W1);
    auto Err1 = torch::zeros_like(W1);
    auto Hinv1 = Hinv.index({Slice(i1, i2), Slice(i1, i2)});
    auto diag1 = Hinv1.diagonal();
    torch::Tensor prune1;  // true = prune
    if (prunen == 0) {
      // Adaptive mask selection: prune the floor(count*rows*s) lowest w²/[H⁻¹]²_jj of the block.
      auto tmp = W1.pow(2) / diag1.pow(2).view({1, -1});
      prune1 = prune_select_matrix(tmp, s).logical_not();
    } else {
      prune1 = torch::zeros_like(W1, torch::kBool);
    }
    for (int64_t i = 0; i < count; ++i) {
      auto w = W1.select(1, i);
      auto dd = Hinv1[i][i];
      if (prunen != 0 && i % prunem == 0) {
        auto tmp = W1.index({Slice(), Slice(i, i + prunem)}).pow(2) /
                   diag1.index({Slice(i, i + prunem)}).pow(2).view({1, -1});
        auto idx = std::get<1>(torch::topk(tmp, prunen, 1, /*largest=*/false));
        prune1.index({Slice(), Slice(i, i + prunem)}).scatter_(1, idx, true);
      }
      auto q = torch::where(prune1.select(1, i), torch::zeros({}, w.options()), w);
      Q1.select(1, i).copy_(q);
      auto err = (w - q) / dd;
      W1.index({Slice(), Slice(i, torch::indexing::None)})
          .sub_(err.unsqueeze(1).matmul(Hinv1.index({i, Slice(i, torch::indexing::None)}).unsqueeze(0)));
      Err1.select(1, i).copy_(err);
    }
    W.index_put_({Slice(), Slice(i1, i2)}, Q1);
    if (i2 < cols) W.index({Slice(), Slice(i2, torch::indexing::None)})
        .sub_(Err1.matmul(Hinv.index({Slice(i1, i2), Slice(i2, torch::indexing::None)})));
    keep.index_put_({Slice(), Slice(i1, i2)}, prune1.logical_not());
  }
  W.copy_(torch::where(keep, W, torch::zeros({}, W.options())));
  return keep;
}

torch::Tensor prune_calibration_windows(const std::vector<int>& tokens, int64_t n, int64_t len, uint64_t seed,
                                        const std::string& source) {
  PATCHLLM_CHECK(n > 0 && len > 1, InvalidArgument, "calibration needs nsamples > 0 and seqlen > 1");
  PATCHLLM_CHECK(static_cast<int64_t>(tokens.size()) > len, InvalidArgument,
                 source.empty() ? std::string() : source + ": ", "calibration text has ", tokens.size(),
                 " tokens, fewer than one window of ", len, " (--seqlen)");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, static_cast<int64_t>(tokens.size()) - len);
  auto out = torch::empty({n, len}, torch::kInt64);
  auto a = out.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t s = pick(rng);
    for (int64_t j = 0; j < len; ++j) a[i][j] = tokens[s + j];
  }
  return out;
}

MaskSet prune_model(Model& model, const torch::Tensor& windows, const PruneOptions& opt) {
  PATCHLLM_CHECK(opt.method == "magnitude" || opt.method == "wanda" || opt.method == "sparsegpt", InvalidArgument,
                 "--method '", opt.method, "' is not magnitude, wanda or sparsegpt");
  model_require_dense(model, "pruning");
  torch::NoGradGuard ng;
  MaskSet ms;
  ms.pattern = opt.pattern;
  ms.tile_r = opt.tile_r;
  ms.tile_c = opt.tile_c;
  double s = opt.pattern == "2:4" ? 0.5 : opt.sparsity;
  auto lin = model.linears();
  const int64_t nl = static_cast<int64_t>(model.layers.size());
  // Masks for one linear given its statistics; replaces the weight with the pruned (and updated) one.
  auto prune_one = [&](const std::string& name, LinearPtr& slot, const torch::Tensor& stat) {
    auto w = slot->weight;
    LinearMask lm;
    torch::Tensor unstructured;
    if (opt.method == "magnitude") {
      lm.keep = prune_magnitude(w, opt.pattern, s);
      if (opt.tile_scores) unstructured = opt.pattern == "unstructured" ? lm.keep
                                                                         : prune_magnitude(w, "unstructured", s);
      slot->weight = mask_weight(w, lm.keep);
    } else if (opt.method == "wanda") {
      lm.keep = prune_wanda(w, stat, opt.pattern, s);
      if (opt.tile_scores) unstructured = opt.pattern == "unstructured" ? lm.keep
                                                                         : prune_wanda(w, stat, "unstructured", s);
      slot->weight = mask_weight(w, lm.keep);
    } else {
      auto H = stat * (2.0 / std::max<double>(1.0, static_cast<double>(windows.numel())));
      if (opt.tile_scores && opt.pattern != "unstructured") {
        auto w2 = w.to(torch::kFloat32).clone();
        unstructured = prune_sparsegpt(w2, H, "unstructured", s, opt.blocksize, opt.damp);
      }
      auto wf = w.to(torch::kFloat32).clone();
      lm.keep = prune_sparsegpt(wf, H, opt.pattern, s, opt.blocksize, opt.damp);
      if (opt.tile_scores && opt.pattern == "unstructured") unstructured = lm.keep;
      slot->weight = mask_weight(wf.to(w.scalar_type()), lm.keep);
    }
    lm.keep = lm.keep.to(torch::kCPU);
    if (opt.pattern == "2:4") lm.tile_map = mask_tile_map_full(w.size(0), w.size(1), opt.tile_r, opt.tile_c);
    if (unstructured.defined()) lm.tile_scores = mask_tile_density(unstructured, opt.tile_r, opt.tile_c);
    ms.masks[name] = lm;
  };

  Progress prog("prune " + opt.method + " " + opt.pattern, nl);
  if (opt.method == "magnitude") {
    for (auto& [name, slot] : lin) prune_one(name, *slot, {});
    for (int64_t i = 0; i < nl; ++i) prog.update(i + 1);
    prog.finish();
    return ms;
  }
  PATCHLLM_CHECK(windows.defined() && windows.dim() == 2, InvalidArgument, opt.method, " needs calibration windows");
  const int64_t N = windows.size(0), L = windows.size(1), B = std::max<int64_t>(1, opt.batch);
  auto h = model.embed_tokens(windows.to(model.device));
  for (int64_t i = 0; i < nl; ++i) {
    std::vector<std::shared_ptr<CaptureLinear>> caps;
    std::vector<LinearPtr> orig;
    for (int64_t j = 0; j < 7; ++j) {
      LinearPtr& slot = *lin[i * 7 + j].second;
      orig.push_back(slot);
      caps.push_back(std::make_shared<CaptureLinear>(slot, opt.method == "sparsegpt"));
      slot = caps.back();
    }
    for (int64_t b0 = 0; b0 < N; b0 += B) {
      int64_t nb = std::min(B, N - b0);
      model.layer_forward(i, h.narrow(0, b0, nb), model.make_context(nb, L));
    }
    for (int64_t j = 0; j < 7; ++j) {
      LinearPtr& slot = *lin[i * 7 + j].second;
      slot = orig[j];
      prune_one(lin[i * 7 + j].first, slot, caps[j]->acc);
      caps[j]->acc = torch::Tensor();
    }
    for (int64_t b0 = 0; b0 < N; b0 += B) {
      int64_t nb = std::min(B, N - b0);
      h.narrow(0, b0, nb).copy_(model.layer_forward(i, h.narrow(0, b0, nb), model.make_context(nb, L)));
    }
    prog.update(i + 1);
  }
  prog.finish();
  return ms;
}

}  // namespace patchllm
