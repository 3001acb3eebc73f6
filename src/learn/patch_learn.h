// PATCH mask learning (patch-method.md §1–§2) with the model's weights frozen:
//   patch-tile   one logit per tile (binary concrete), the 2:4 pattern fixed from a one-shot prior;
//   patch-joint  tile logits + 6 logits per group of 4 (Gumbel-softmax over the 2:4 candidates);
//   maskllm      6 logits per group only (MaskLLM baseline: pure 2:4, no sparsity regulariser, weight decay 0.1).
// τ/κ linear schedules, analytic density regulariser (global or per layer), normalised weight regulariser decayed
// linearly, AdamW in fp32 with cosine LR and warm-up, grad-norm clipping, micro-batches with accumulation, optional
// gradient checkpointing per decoder layer, resumable state; final tiles by the exact-budget rule (or θ > 0).
#pragma once
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "mask/mask.h"
#include "model/model.h"

namespace patchllm {

struct LearnOptions {
  std::string method = "patch-tile";  // patch-tile | patch-joint | maskllm
  double target_sparsity = 0.45;      // s* (maskllm: 0.5 by construction)
  int64_t tile_r = 128, tile_c = 128;
  int64_t steps = 200, micro_batch = 1, grad_accum = 1, seqlen = 512;
  double lr = 1e-3, warmup = 5, grad_clip = 1.0;
  double weight_decay = -1;  // < 0: the method's default (0 for PATCH, 0.1 for MaskLLM)
  double tau0 = 4.0, tau1 = 0.05, kappa0 = 25, kappa1 = 350;            // tile schedule
  double tau24_0 = 4.0, tau24_1 = 0.05, kappa24_0 = 100, kappa24_1 = 500;  // 2:4 schedule
  double sparse_reg = 7.0;
  double weight_reg = 10.0;  // −weight_reg·(1 − s/T)·Σ‖M⊙W‖_F / Σ‖W‖_F
  bool per_layer = false;    // density target and exact budget per decoder layer instead of global
  double prior_strength = 3.0, prior_strength_24 = 3.0, init_std = 0.014;
  bool hard = false, hard_24 = false;  // straight-through samples (tile, 2:4)
  bool exact_budget = true;            // false: the reference rule, dense iff θ > 0
  bool checkpoint_layers = false;      // recompute each decoder layer in backward
  int64_t keep_layers = 0;             // with checkpoint_layers: the last N decoder layers keep their activations
                                       // instead (no recompute): faster, by one layer's activations each
  bool materialise_masks = false;      // benchmark baseline: the reference design (full-size masks built outside
                                       // the checkpointed layers, alive for the whole step; logits of the whole
                                       // sequence at once)
  bool fused_masks = true;             // CUDA: build W_eff and reduce the logits' gradients in fused kernels
                                       // (src/ops/mask_kernels.h); false: the LibTorch composition (same math)
  int64_t ce_chunk = 1024;             // with checkpoint_layers: LM head + cross-entropy on this many positions at a
                                       // time, each recomputed in backward; 0: the whole sequence at once
  uint64_t seed = 0;
  std::string log_jsonl;     // one JSON line per step, appended (empty: none)
  std::string state_path;    // resumable state file (empty: none)
  int64_t checkpoint_every = 0;  // save the state every N steps (and at the end); 0: only at the end
  bool resume = false;           // continue from state_path if it exists
  int64_t stop_after = -1;       // stop (after saving the state) once this many steps are done; -1: run to the end
};

struct LearnResult {
  MaskSet masks;
  nlohmann::json history;  // per-step records of this process
  double achieved_sparsity = 0;
  bool finished = false;   // false when stop_after ended the run early (masks then empty)
  std::map<std::string, torch::Tensor> thetas, phis;  // final logits by weight name (CPU fp32), for inspection
};

bool learn_method_known(const std::string& method);
// InvalidArgument (one line) for a method, sparsity, tile or batch setting patch_learn cannot take; cheap, so callers
// can fail before computing a prior.
void learn_check_options(const LearnOptions& o);

// prior: a one-shot 2:4 keep mask for every decoder linear (the frozen pattern for patch-tile, the pattern prior
// for patch-joint / maskllm) with optional tile_scores (per-tile density of an unstructured mask at s*): the top
// round(N·(1−2s*)) tiles of each matrix start at +std·strength, the rest at −. train: [N, seqlen] token windows,
// visited in a seeded shuffled order. The model's linear slots are restored before returning.
LearnResult patch_learn(Model& model, const MaskSet& prior, const torch::Tensor& train, const LearnOptions& opt);

// Mean next-token cross-entropy of the last decoder layer's output h [B, T, D] against tokens [B, T] (position t
// predicts token t + 1). chunk > 0: the final norm, LM head and loss run on `chunk` positions at a time inside
// checkpoint(), so only one chunk's fp32 logits and their gradient exist at once. Whole, they are the largest
// tensors of a step at long sequences and large vocabularies (Qwen2.5, 4096 positions × 151 936 × 4 B = 2.5 GB,
// held about three times: logits, log-softmax, gradient). The value equals the whole-sequence loss up to summation
// order.
torch::Tensor next_token_ce(const Model& model, const torch::Tensor& h, const torch::Tensor& tokens, int64_t chunk);

}  // namespace patchllm
