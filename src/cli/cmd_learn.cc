// Mask learning behind `patchllm prune --method patch-tile|patch-joint|maskllm -m DIR --sparsity S -f TRAIN -o OUT`.
// Writes OUT/masks.safetensors (mask file v1, hybrid tile maps), OUT/prior.safetensors (the one-shot prior),
// OUT/patch_config.json (every setting, replayable), OUT/train_log.jsonl (one line per step),
// OUT/learn_state.safetensors (resumable state, learn/learn_state.h), OUT/learn_report.json (provenance, achieved
// sparsity) and, with --export, OUT/hf (the pruned model with exact zeros).
#include "cli/learn_cli.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/provenance.h"
#include "export/export.h"
#include "mask/mask.h"
#include "prune/prune.h"

namespace patchllm::cli {

void add_learn_options(CLI::App* sub, LearnCli& o) {
  auto* g = sub->add_option_group("mask learning", "patch-tile | patch-joint | maskllm (weights frozen)");
  g->add_option("--prior", o.prior, "one-shot source of the 2:4 pattern / prior and of the tile prior: wanda | "
                                    "magnitude | sparsegpt | maskllm-npz (with --prior-from)")->capture_default_str();
  g->add_option("--prior-from", o.prior_from, "MaskLLM mask_compressed.npz for --prior maskllm-npz");
  g->add_option("--steps", o.l.steps, "optimizer steps")->capture_default_str();
  g->add_option("--train-seqlen", o.l.seqlen, "training sequence length (blocks of the training text)")
      ->capture_default_str();
  g->add_option("--micro-batch", o.l.micro_batch, "sequences per forward")->capture_default_str();
  g->add_option("--grad-accum", o.l.grad_accum, "micro-batches per optimizer step")->capture_default_str();
  g->add_option("--lr", o.l.lr, "peak learning rate (cosine, 5 warm-up steps)")->capture_default_str();
  g->add_option("--weight-decay", o.l.weight_decay, "AdamW weight decay (default: 0 PATCH, 0.1 MaskLLM)");
  g->add_option("--sparse-reg", o.l.sparse_reg, "λ of |d − d*|")->capture_default_str();
  g->add_option("--weight-reg", o.l.weight_reg, "weight regulariser (normalised ‖M⊙W‖, decays linearly to 0)")
      ->capture_default_str();
  g->add_flag("--per-layer", o.l.per_layer, "density target and exact budget per decoder layer (default: global)");
  g->add_option("--prior-strength", o.l.prior_strength, "tile prior offset in units of the init std")
      ->capture_default_str();
  g->add_option("--prior-strength-24", o.l.prior_strength_24, "2:4 prior offset in units of the init std")
      ->capture_default_str();
  g->add_option("--tau", o.l.tau0, "tile τ start")->capture_default_str();
  g->add_option("--tau-end", o.l.tau1, "tile τ end")->capture_default_str();
  g->add_option("--kappa", o.l.kappa0, "tile κ start")->capture_default_str();
  g->add_option("--kappa-end", o.l.kappa1, "tile κ end")->capture_default_str();
  g->add_option("--tau-24", o.l.tau24_0, "2:4 τ start")->capture_default_str();
  g->add_option("--tau-24-end", o.l.tau24_1, "2:4 τ end")->capture_default_str();
  g->add_option("--kappa-24", o.l.kappa24_0, "2:4 κ start")->capture_default_str();
  g->add_option("--kappa-24-end", o.l.kappa24_1, "2:4 κ end")->capture_default_str();
  g->add_flag("--hard", o.l.hard, "straight-through hard tile samples");
  g->add_flag("--hard-24", o.l.hard_24, "straight-through hard 2:4 samples");
  g->add_flag("--theta-rule", o.theta_rule, "final tiles dense iff θ > 0 (reference rule) instead of exact budget");
  g->add_flag("--grad-checkpoint", o.l.checkpoint_layers, "recompute each decoder layer in backward (less memory)");
  g->add_option("--keep-layers", o.l.keep_layers,
                "with --grad-checkpoint: the last N decoder layers keep their activations instead of recomputing "
                "them (faster; each costs one layer's activations)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  g->add_option("--checkpoint-every", o.l.checkpoint_every, "save the resumable state every N steps")
      ->capture_default_str();
  g->add_flag("--resume", o.l.resume, "continue from OUT/learn_state.safetensors (same command, same data)");
  g->add_option("--stop-after", o.l.stop_after, "stop after this many steps (state saved; finish with --resume)");
  g->add_flag("--export", o.export_hf, "also write OUT/hf: the pruned model with exact zeros");
  g->add_flag("--materialise-masks", o.l.materialise_masks,
              "benchmark baseline: build full-size masks outside the checkpointed layers, logits of the whole "
              "sequence at once (the reference design)");
  g->add_flag("!--unfused-masks", o.l.fused_masks,
              "CUDA: build the masked weights with LibTorch ops instead of the fused kernels (to compare)");
  g->add_option("--ce-chunk", o.l.ce_chunk,
                "with --grad-checkpoint: LM head and loss on this many positions at a time, recomputed in backward "
                "(0: whole sequence)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

void run_learn(const PruneCommon& p, LearnCli& o) {
  auto& l = o.l;
  std::tie(l.tile_r, l.tile_c) = parse_tile(p.tile);
  learn_check_options(l);  // before the prior, which takes minutes on a large model
  PATCHLLM_CHECK(!p.file.empty(), InvalidArgument, "--method ", l.method, " needs training text (-f)");
  PATCHLLM_CHECK(file_exists(p.file), InvalidArgument, p.file, ": training text not found");
  l.exact_budget = !o.theta_rule;
  l.seed = p.seed;
  const std::string mask_path = path_join(p.out, "masks.safetensors");
  PATCHLLM_CHECK(p.force || !file_exists(mask_path), InvalidArgument, mask_path, ": exists (use --force)");
  if (o.export_hf) export_check_output(p.model, path_join(p.out, "hf"), p.force);
  auto tok = tokenizer_load(p.model);
  auto ids = tokenize_documents(*tok, file_read(p.file), unescape(p.split_on));
  PATCHLLM_CHECK(static_cast<int64_t>(ids.size()) >= l.seqlen, InvalidArgument, p.file, ": ", ids.size(),
                 " tokens, fewer than one training sequence of ", l.seqlen, " (empty training text?)");
  dir_create(p.out);
  l.state_path = path_join(p.out, "learn_state.safetensors");
  // Older versions wrote the state as a LibTorch archive, learn_state.pt, whose reader crashed on damaged files
  // (fuzz_learn_state), so it is no longer read. Said before the prior's minutes of work, not after.
  const std::string legacy_state = path_join(p.out, "learn_state.pt");
  PATCHLLM_CHECK(!l.resume || file_exists(l.state_path) || !file_exists(legacy_state), InvalidArgument, legacy_state,
                 ": a learning state of an older patchllm (LibTorch archive), which this one does not read; finish "
                 "the run with that version, or remove the file to start over");
  std::string desc, fp = model_fingerprint(p.model, &desc);
  const std::string train_sha = sha256_file(p.file);

  // Prior: one-shot 2:4 masks plus per-tile densities of the unstructured mask at s*, computed on a separate copy
  // of the model (one-shot pruning masks weights in place; learning needs the dense frozen weights). Saved, and
  // reused by --resume.
  const std::string prior_path = path_join(p.out, "prior.safetensors");
  MaskSet prior;
  if (l.resume && file_exists(prior_path)) {
    prior = mask_load_checked(prior_path, p.model);
    log_info("prior: reusing ", prior_path);
  } else {
    auto copy = Model::load(p.model, p.load);
    if (o.prior == "maskllm-npz") {
      PATCHLLM_CHECK(!o.prior_from.empty(), InvalidArgument, "--prior maskllm-npz needs --prior-from FILE.npz");
      prior = mask_load_npz(o.prior_from, mask_model_shapes(p.model));
    }
    PruneOptions po;
    // The tile prior needs an unstructured mask; with an imported 2:4 mask it comes from Wanda (as the reference).
    po.method = o.prior == "maskllm-npz" ? "wanda" : o.prior;
    po.pattern = "2:4";
    po.sparsity = l.target_sparsity;
    po.tile_r = l.tile_r;
    po.tile_c = l.tile_c;
    po.tile_scores = l.method != "maskllm";
    PATCHLLM_CHECK(po.method == "magnitude" || po.method == "wanda" || po.method == "sparsegpt", InvalidArgument,
                   "--prior ", o.prior, ": unknown (wanda | magnitude | sparsegpt | maskllm-npz)");
    auto windows = prune_calibration_windows(ids, p.nsamples, p.seqlen, p.seed, p.file);
    log_info("prior: ", o.prior, " 2:4", po.tile_scores ? str(" + unstructured tile scores at ", l.target_sparsity)
                                                         : std::string(),
             " from ", p.nsamples, "x", p.seqlen, " tokens");
    auto oneshot = prune_model(*copy, windows, po);
    if (o.prior == "maskllm-npz") {
      for (auto& [name, lm] : prior.masks) lm.tile_scores = oneshot.masks.at(name).tile_scores;
    } else {
      prior = oneshot;
    }
    prior.tile_r = l.tile_r;
    prior.tile_c = l.tile_c;
    for (auto& [name, lm] : prior.masks) lm.tile_map = mask_tile_map_full(lm.keep.size(0), lm.keep.size(1), l.tile_r,
                                                                           l.tile_c);
    prior.fingerprint = fp;
    prior.fingerprint_desc = desc;
    prior.meta["method"] = o.prior;
    prior.meta["prior"] = o.prior;
    prior.meta["calibration_sha256"] = train_sha;
    mask_save(prior_path, prior);
  }
  const int64_t L = l.seqlen, nblocks = static_cast<int64_t>(ids.size()) / L;
  auto train = torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + nblocks * L)).view({nblocks, L});
  auto model = Model::load(p.model, p.load);
  l.log_jsonl = path_join(p.out, "train_log.jsonl");
  nlohmann::json cfg = {{"method", l.method}, {"target_sparsity", l.target_sparsity},
                        {"tile", {l.tile_r, l.tile_c}}, {"steps", l.steps}, {"train_seqlen", L},
                        {"micro_batch", l.micro_batch}, {"grad_accum", l.grad_accum}, {"lr", l.lr},
                        {"weight_decay", l.weight_decay}, {"tau", {l.tau0, l.tau1}}, {"kappa", {l.kappa0, l.kappa1}},
                        {"tau_24", {l.tau24_0, l.tau24_1}}, {"kappa_24", {l.kappa24_0, l.kappa24_1}},
                        {"sparse_reg", l.sparse_reg}, {"weight_reg", l.weight_reg}, {"per_layer", l.per_layer},
                        {"prior", o.prior}, {"prior_from", o.prior_from}, {"prior_strength", l.prior_strength},
                        {"prior_strength_24", l.prior_strength_24}, {"init_std", l.init_std}, {"hard", l.hard},
                        {"hard_24", l.hard_24}, {"final_rule", o.theta_rule ? "theta>0" : "exact-budget"},
                        {"grad_checkpoint", l.checkpoint_layers}, {"keep_layers", l.keep_layers},
                        {"materialise_masks", l.materialise_masks},
                        {"ce_chunk", l.ce_chunk}, {"fused_masks", l.fused_masks}, {"nsamples", p.nsamples},
                        {"seqlen", p.seqlen}, {"seed", l.seed}, {"train_file", p.file},
                        {"train_sha256", train_sha}, {"train_blocks", nblocks}, {"split_on", p.split_on},
                        {"model", p.model}, {"model_fingerprint", fp}, {"device", p.device_desc}};
  write_json(path_join(p.out, "patch_config.json"), cfg);
  auto r = patch_learn(*model, prior, train, l);
  if (!r.finished) {
    log_info("stopped after ", l.stop_after, " steps; state in ", l.state_path, " (continue with --resume)");
    return;
  }
  mask_save(mask_path, r.masks);
  auto prov = provenance_json({p.file, path_join(p.model, "config.json")});
  nlohmann::json rep = {{"config", cfg}, {"achieved_sparsity", r.achieved_sparsity},
                        {"final_step", r.history.empty() ? nlohmann::json() : r.history.back()},
                        {"masks", mask_report(r.masks)}, {"provenance", prov}};
  write_json(path_join(p.out, "learn_report.json"), rep);
  log_info("wrote ", mask_path, ": achieved sparsity ", r.achieved_sparsity, " (target ", l.target_sparsity, ")");
  if (o.export_hf) {
    ExportOptions eo;
    eo.force = p.force;
    eo.provenance = prov;
    export_hf(p.model, path_join(p.out, "hf"), r.masks, {}, eo);
  }
  std::printf("%s hybrid sparsity %.6f (target %.4f) -> %s\n", l.method.c_str(), r.achieved_sparsity,
              l.target_sparsity, mask_path.c_str());
}

}  // namespace patchllm::cli
