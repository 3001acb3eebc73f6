// PATCH-Tile mask learning (patch-method.md §1–§2): weights and the 2:4 pattern frozen, one logit per tile learned
// with the binary-concrete relaxation, τ/κ linear schedules, analytic density regulariser, AdamW in fp32 with cosine
// LR and warm-up, grad-norm clipping, micro-batches; final tiles by the exact-budget rule (or θ > 0).
#pragma once
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "mask/mask.h"
#include "model/model.h"

namespace patchllm {

struct LearnOptions {
  double target_sparsity = 0.45;
  int64_t tile_r = 128, tile_c = 128;
  int64_t steps = 200, micro_batch = 1, grad_accum = 1, seqlen = 512;
  double lr = 1e-3, warmup = 5, grad_clip = 1.0;
  double tau0 = 4.0, tau1 = 0.05, kappa0 = 25, kappa1 = 350;
  double sparse_reg = 7.0;
  double prior_strength = 3.0, init_std = 0.014;
  bool hard = false;
  bool exact_budget = true;  // false: the reference rule, dense iff θ > 0
  uint64_t seed = 0;
  std::string log_jsonl;     // one JSON line per step (empty: none)
};

struct LearnResult {
  MaskSet masks;
  nlohmann::json history;  // per-step records
  double achieved_sparsity = 0;
};

// prior: the frozen 2:4 keep masks (tile_map all ones) for every decoder linear; tile_scores (per-tile density of an
// unstructured mask at the target) optional: top round(N·(1−2s*)) tiles per matrix get +std·strength, the rest −.
// train: [N, seqlen] token windows. The model's linear slots are restored before returning.
LearnResult patch_learn_tile(Model& model, const MaskSet& prior, const torch::Tensor& train, const LearnOptions& opt);

}  // namespace patchllm
