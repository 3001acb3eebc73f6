#include "learn/patch_learn.h"

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/log.h"
#include "learn/tile_mask.h"

namespace patchllm {

LearnResult patch_learn_tile(Model& model, const MaskSet& prior, const torch::Tensor& train, const LearnOptions& o) {
  PATCHLLM_CHECK(o.target_sparsity >= 0 && o.target_sparsity <= 0.5, InvalidArgument, "--sparsity ",
                 o.target_sparsity, " outside [0, 0.5]");
  PATCHLLM_CHECK(o.tile_c % 4 == 0 && o.tile_c > 0 && o.tile_r > 0, InvalidArgument, "tile width ", o.tile_c,
                 " is not a positive multiple of 4 (2:4 groups would straddle tiles)");
  PATCHLLM_CHECK(train.dim() == 2 && train.size(0) > 0, InvalidArgument, "no training windows (empty training text?)");
  torch::manual_seed(o.seed);
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(o.seed + 1);
  auto slots = model.linears();
  std::vector<LinearPtr> originals;
  std::vector<std::shared_ptr<TileMaskedLinear>> tiles;
  std::vector<torch::Tensor> thetas;
  std::vector<TileGrid> grids;
  std::vector<torch::Tensor> numels;
  double total = 0;
  for (auto& [name, slot] : slots) {
    auto it = prior.masks.find(name);
    PATCHLLM_CHECK(it != prior.masks.end(), InvalidArgument, "prior mask has no entry for ", name);
    const Linear& base = **slot;
    TileGrid g{base.out_features(), base.in_features(), o.tile_r, o.tile_c};
    auto tl = std::make_shared<TileMaskedLinear>(base, it->second.keep, g);
    // θ ~ N(0, std²) (fp32 master, unlike the reference's bf16) plus the tile prior from unstructured densities.
    auto theta = torch::randn({g.grid_r(), g.grid_c()}) * o.init_std;
    const auto& scores = it->second.tile_scores;
    if (scores.defined()) {
      int64_t n = theta.numel(), n_dense = std::llround(n * (1 - 2 * o.target_sparsity));
      auto order = scores.reshape({-1}).argsort(0, /*descending=*/true);
      auto sign = -torch::ones({n});
      if (n_dense > 0) sign.index_fill_(0, order.narrow(0, 0, n_dense), 1.0);
      theta += (sign * o.init_std * o.prior_strength).view(theta.sizes());
    }
    theta = theta.to(model.device).requires_grad_(true);
    auto ne = tile_numel(g).to(model.device);
    total += ne.sum().item<double>();
    originals.push_back(*slot);
    *slot = tl;
    tiles.push_back(tl);
    thetas.push_back(theta);
    grids.push_back(g);
    numels.push_back(ne);
  }
  torch::optim::AdamW adam(thetas, torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(0));
  const double d_target = 1 - o.target_sparsity;
  LearnResult res;
  res.history = nlohmann::json::array();
  std::ofstream log;
  if (!o.log_jsonl.empty()) log.open(o.log_jsonl);
  Progress prog("learn", o.steps);
  int64_t cursor = 0;
  const int64_t N = train.size(0);
  auto perm = torch::randperm(N, torch::TensorOptions().dtype(torch::kLong));  // shuffled with the seed
  double t_start = now_seconds();
  for (int64_t step = 0; step < o.steps; ++step) {
    const double frac = std::min(1.0, double(step) / std::max<int64_t>(1, o.steps));
    const double tau = o.tau0 + (o.tau1 - o.tau0) * frac, kappa = o.kappa0 + (o.kappa1 - o.kappa0) * frac;
    double lr = step < o.warmup ? o.lr * (step + 1) / o.warmup
                                : 0.5 * o.lr * (1 + std::cos(M_PI * (step - o.warmup) / std::max(1.0, o.steps - o.warmup)));
    for (auto& pg : adam.param_groups()) static_cast<torch::optim::AdamWOptions&>(pg.options()).lr(lr);
    adam.zero_grad();
    double ce_sum = 0, dens = 0;
    for (int64_t a = 0; a < o.grad_accum; ++a) {
      std::vector<int64_t> idx;
      for (int64_t b = 0; b < o.micro_batch; ++b) idx.push_back(perm[(cursor++) % N].item<int64_t>());
      auto x = train.index_select(0, torch::tensor(idx)).to(model.device);
      // Fresh Gumbel noise for every micro-batch, as the reference's forward pre-hook does.
      torch::Tensor weighted = torch::zeros({}, torch::TensorOptions().device(model.device));
      for (size_t m = 0; m < tiles.size(); ++m) {
        tiles[m]->t = tile_sample(thetas[m], kappa, tau, o.hard, gen);
        weighted = weighted + (tiles[m]->t * numels[m]).sum();
      }
      auto d = 0.5 + 0.5 * weighted / total;  // analytic density (patch-method.md §1.9)
      auto logits = model.forward(x);
      auto ce = torch::nn::functional::cross_entropy(logits.narrow(1, 0, x.size(1) - 1).reshape({-1, logits.size(-1)}),
                                                    x.narrow(1, 1, x.size(1) - 1).reshape({-1}));
      auto loss = (ce + o.sparse_reg * (d - d_target).abs()) / double(o.grad_accum);
      loss.backward();
      ce_sum += ce.item<double>();
      dens += d.item<double>();
    }
    torch::nn::utils::clip_grad_norm_(thetas, o.grad_clip);
    adam.step();
    nlohmann::json rec = {{"step", step + 1}, {"ce", ce_sum / o.grad_accum}, {"density", dens / o.grad_accum},
                          {"target_density", d_target}, {"tau", tau}, {"kappa", kappa}, {"lr", lr},
                          {"seconds", now_seconds() - t_start}};
    res.history.push_back(rec);
    if (log.is_open()) log << rec.dump() << "\n" << std::flush;
    prog.update(step + 1, str("ce ", ce_sum / o.grad_accum, " density ", dens / o.grad_accum, " tau ", tau));
  }
  // Final discrete mask.
  std::vector<torch::Tensor> dense;
  if (o.exact_budget) {
    dense = tile_select_exact(thetas, grids, o.target_sparsity);
  } else {
    for (auto& th : thetas) dense.push_back((th.detach() > 0).to(torch::kCPU));
  }
  res.masks.pattern = "2:4";
  res.masks.tile_r = o.tile_r;
  res.masks.tile_c = o.tile_c;
  res.masks.fingerprint = prior.fingerprint;
  res.masks.fingerprint_desc = prior.fingerprint_desc;
  res.masks.meta = prior.meta;
  res.masks.meta["method"] = "patch-tile";
  res.masks.meta["target_sparsity"] = std::to_string(o.target_sparsity);
  res.masks.meta["seed"] = std::to_string(o.seed);
  res.masks.meta["final_rule"] = o.exact_budget ? "exact-budget" : "theta>0";
  for (size_t m = 0; m < slots.size(); ++m) {
    const auto& name = slots[m].first;
    LinearMask lm;
    auto d = dense[m];
    lm.tile_map = (~d).to(torch::kUInt8);
    lm.keep = prior.masks.at(name).keep.logical_or(tile_expand(d.to(torch::kFloat32), grids[m]) > 0.5);
    res.masks.masks[name] = lm;
    *slots[m].second = originals[m];
  }
  res.achieved_sparsity = res.masks.sparsity();
  return res;
}

}  // namespace patchllm
