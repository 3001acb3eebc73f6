// patchllm learn -m DIR --method patch-tile --sparsity S -f TRAIN_TEXT [--prior wanda|magnitude|sparsegpt ...] -o DIR
// Writes DIR/masks.safetensors (mask file v1, hybrid tile maps), DIR/patch_config.json (every setting, replayable),
// DIR/train_log.jsonl (one line per step) and DIR/learn_report.json (provenance, achieved sparsity, PPL-free summary).
#include "cli/common.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/provenance.h"
#include "learn/patch_learn.h"
#include "mask/mask.h"
#include "prune/prune.h"

namespace patchllm::cli {

void register_learn(CLI::App& app) {
  struct Opts {
    std::string model, file, out, method = "patch-tile", prior = "wanda", tile = "128x128", split_on;
    int64_t calib_samples = 32, calib_seqlen = 256;
    LearnOptions l;
    DeviceOptions dev;
    bool force = false, theta_rule = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("learn", "learn a PATCH hybrid dense/2:4 tile mask (weights frozen)");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory")->required();
  sub->add_option("--method", o->method, "patch-tile (patch-joint and maskllm: not yet)")->capture_default_str();
  sub->add_option("--sparsity", o->l.target_sparsity, "target sparsity s* in [0, 0.5]")->capture_default_str();
  sub->add_option("-f,--file", o->file, "training text")->required();
  sub->add_option("--split-on", o->split_on, "document separator (\\\\n escapes), each document with BOS");
  sub->add_option("--prior", o->prior, "one-shot source of the frozen 2:4 pattern and tile prior: wanda | magnitude | "
                                       "sparsegpt")->capture_default_str();
  sub->add_option("--calib-samples", o->calib_samples, "calibration windows for the prior")->capture_default_str();
  sub->add_option("--calib-seqlen", o->calib_seqlen, "calibration window length")->capture_default_str();
  sub->add_option("--tile", o->tile, "tile size RxC")->capture_default_str();
  sub->add_option("--steps", o->l.steps, "optimizer steps")->capture_default_str();
  sub->add_option("--seq-len", o->l.seqlen, "training sequence length")->capture_default_str();
  sub->add_option("--micro-batch", o->l.micro_batch, "sequences per forward")->capture_default_str();
  sub->add_option("--grad-accum", o->l.grad_accum, "micro-batches per optimizer step")->capture_default_str();
  sub->add_option("--lr", o->l.lr, "peak learning rate (cosine, warm-up 5 steps)")->capture_default_str();
  sub->add_option("--sparse-reg", o->l.sparse_reg, "λ of |d − d*|")->capture_default_str();
  sub->add_option("--prior-strength", o->l.prior_strength, "tile prior offset in units of the init std")
      ->capture_default_str();
  sub->add_option("--tau", o->l.tau0, "τ start (end: --tau-end)")->capture_default_str();
  sub->add_option("--tau-end", o->l.tau1, "τ end")->capture_default_str();
  sub->add_option("--kappa", o->l.kappa0, "κ start (end: --kappa-end)")->capture_default_str();
  sub->add_option("--kappa-end", o->l.kappa1, "κ end")->capture_default_str();
  sub->add_flag("--hard", o->l.hard, "straight-through hard tile samples");
  sub->add_flag("--theta-rule", o->theta_rule, "final tiles dense iff θ > 0 (reference rule) instead of exact budget");
  sub->add_option("-s,--seed", o->l.seed, "seed (data order, noise, init)")->capture_default_str();
  sub->add_option("-o,--output", o->out, "output directory")->required();
  sub->add_flag("--force", o->force, "overwrite existing outputs in the output directory");
  o->dev.add(sub);
  sub->callback([o] {
    PATCHLLM_CHECK(o->method == "patch-tile", InvalidArgument, "--method ", o->method,
                   ": only patch-tile is implemented (patch-joint, maskllm: not yet)");
    PATCHLLM_CHECK(o->l.target_sparsity >= 0 && o->l.target_sparsity <= 0.5, InvalidArgument, "--sparsity ",
                   o->l.target_sparsity, " outside [0, 0.5]");
    std::tie(o->l.tile_r, o->l.tile_c) = parse_tile(o->tile);
    PATCHLLM_CHECK(o->l.tile_r > 0 && o->l.tile_c > 0 && o->l.tile_c % 4 == 0, InvalidArgument, "--tile ", o->tile,
                   ": the width must be a positive multiple of 4 (2:4 groups would straddle tiles)");
    o->l.exact_budget = !o->theta_rule;
    PATCHLLM_CHECK(file_exists(o->file), InvalidArgument, o->file, ": training text not found");
    std::string mask_path = path_join(o->out, "masks.safetensors");
    PATCHLLM_CHECK(o->force || !file_exists(mask_path), InvalidArgument, mask_path, ": exists (use --force)");
    auto lo = o->dev.resolve();
    auto tok = tokenizer_load(o->model);
    auto ids = tokenize_documents(*tok, file_read(o->file), unescape(o->split_on));
    PATCHLLM_CHECK(static_cast<int64_t>(ids.size()) >= o->l.seqlen, InvalidArgument, o->file, ": ", ids.size(),
                   " tokens, fewer than one training sequence of ", o->l.seqlen, " (empty training text?)");
    // Prior: one-shot 2:4 masks plus per-tile densities of the unstructured mask at s*, from a separate copy of the
    // model (one-shot pruning masks its weights in place; mask learning needs the dense frozen weights).
    std::string desc, fp = model_fingerprint(o->model, &desc);
    MaskSet prior;
    {
      auto copy = Model::load(o->model, lo);
      PruneOptions po;
      po.method = o->prior;
      po.pattern = "2:4";
      po.sparsity = o->l.target_sparsity;
      po.tile_r = o->l.tile_r;
      po.tile_c = o->l.tile_c;
      po.tile_scores = true;
      auto windows = prune_calibration_windows(ids, o->calib_samples, o->calib_seqlen, o->l.seed);
      log_info("prior: ", o->prior, " 2:4 + unstructured tile scores at ", o->l.target_sparsity, " from ",
               o->calib_samples, "x", o->calib_seqlen, " tokens");
      prior = prune_model(*copy, windows, po);
    }
    prior.fingerprint = fp;
    prior.fingerprint_desc = desc;
    prior.meta["prior"] = o->prior;
    prior.meta["calibration_sha256"] = sha256_file(o->file);
    const int64_t L = o->l.seqlen, nblocks = static_cast<int64_t>(ids.size()) / L;
    auto train = torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + nblocks * L)).view({nblocks, L});
    auto model = Model::load(o->model, lo);
    dir_create(o->out);
    o->l.log_jsonl = path_join(o->out, "train_log.jsonl");
    nlohmann::json cfg = {{"method", o->method}, {"target_sparsity", o->l.target_sparsity},
                          {"tile", {o->l.tile_r, o->l.tile_c}}, {"steps", o->l.steps}, {"seq_len", L},
                          {"micro_batch", o->l.micro_batch}, {"grad_accum", o->l.grad_accum}, {"lr", o->l.lr},
                          {"tau", {o->l.tau0, o->l.tau1}}, {"kappa", {o->l.kappa0, o->l.kappa1}},
                          {"sparse_reg", o->l.sparse_reg}, {"prior", o->prior},
                          {"prior_strength", o->l.prior_strength}, {"init_std", o->l.init_std},
                          {"hard", o->l.hard}, {"final_rule", o->theta_rule ? "theta>0" : "exact-budget"},
                          {"calib_samples", o->calib_samples}, {"calib_seqlen", o->calib_seqlen},
                          {"seed", o->l.seed}, {"train_file", o->file}, {"train_sha256", sha256_file(o->file)},
                          {"split_on", o->split_on}, {"model", o->model}, {"model_fingerprint", fp},
                          {"device", describe(lo)}};
    write_json(path_join(o->out, "patch_config.json"), cfg);
    auto r = patch_learn_tile(*model, prior, train, o->l);
    mask_save(mask_path, r.masks);
    nlohmann::json rep = {{"config", cfg}, {"achieved_sparsity", r.achieved_sparsity},
                          {"final_step", r.history.empty() ? nlohmann::json() : r.history.back()},
                          {"masks", mask_report(r.masks)}, {"provenance", provenance_json({o->file})}};
    write_json(path_join(o->out, "learn_report.json"), rep);
    log_info("wrote ", mask_path, ": achieved sparsity ", r.achieved_sparsity, " (target ", o->l.target_sparsity, ")");
  });
}

}  // namespace patchllm::cli
