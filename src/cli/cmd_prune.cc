// patchllm prune -m DIR --method magnitude|wanda|sparsegpt|maskllm-npz --pattern 2:4|unstructured --sparsity S
//   -f CALIB_TEXT [--nsamples 128 --seqlen 2048 --seed 0 --tile 128x128 --tile-scores] -o OUT_DIR
// patchllm prune -m DIR --method patch-tile|patch-joint|maskllm --sparsity S -f TRAIN_TEXT [...] -o OUT_DIR
//   (mask learning: cmd_learn.cc)
// Writes OUT_DIR/masks.safetensors, OUT_DIR/prune_report.json and, for SparseGPT (which updates weights),
// OUT_DIR/sparsegpt-hf/ (the pruned model with SparseGPT's updated weights).
#include <cstdio>

#include "cli/common.h"
#include "cli/learn_cli.h"
#include "core/file.h"
#include "core/log.h"
#include "core/provenance.h"
#include "export/export.h"
#include "io/safetensors.h"
#include "mask/mask.h"
#include "prune/prune.h"
#include "tokenizer/tokenizer.h"

namespace patchllm::cli {

void register_prune(CLI::App& app) {
  struct Opts {
    std::string model, file, out, tile = "128x128", split_on, from;
    int64_t nsamples = 128, seqlen = 2048;
    uint64_t seed = 0;
    bool force = false, no_weights = false;
    PruneOptions p;
    DeviceOptions dev;
    LearnCli learn;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("prune", "prune the decoder linears: one-shot (magnitude, Wanda, SparseGPT) or "
                                           "learned masks (PATCH-Tile, PATCH-Joint, MaskLLM)");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory")->required()->envname("PATCHLLM_ARG_MODEL");
  sub->add_option("--method", o->p.method, "magnitude | wanda | sparsegpt | maskllm-npz (import --from FILE) | "
                                          "patch-tile | patch-joint | maskllm (learned)")
      ->capture_default_str();
  sub->add_option("--pattern", o->p.pattern, "2:4 | unstructured")->capture_default_str();
  sub->add_option("--sparsity", o->p.sparsity, "target sparsity (unstructured, PATCH in [0, 0.5]; 2:4 is 0.5)")->capture_default_str();
  sub->add_option("-f,--file", o->file, "calibration text (wanda, sparsegpt; learned methods: training text)");
  sub->add_option("--nsamples,--num-samples", o->nsamples, "calibration windows")->capture_default_str();
  sub->add_option("--seqlen,--seq-len", o->seqlen, "tokens per calibration window")->capture_default_str();
  sub->add_option("-s,--seed", o->seed, "seed for the window offsets")->capture_default_str();
  sub->add_option("--tile", o->tile, "tile size RxC for tile maps and tile scores")->capture_default_str();
  sub->add_flag("--tile-scores", o->p.tile_scores,
                "store per-tile density of an unstructured mask at --sparsity (the PATCH tile prior)");
  sub->add_option("--split-on", o->split_on, "document separator in the calibration text (\\n escapes allowed)");
  sub->add_option("--damp", o->p.damp, "SparseGPT dampening (fraction of mean diag H)")->capture_default_str();
  sub->add_option("--blocksize", o->p.blocksize, "SparseGPT block size")->capture_default_str();
  sub->add_option("-b,--batch-size", o->p.batch, "calibration windows per layer forward")->capture_default_str();
  sub->add_option("--from", o->from, "maskllm-npz: MaskLLM mask_compressed.npz to import");
  sub->add_option("-o,--output", o->out, "output directory")->required();
  sub->add_flag("--force", o->force, "overwrite an existing output directory");
  sub->add_flag("--no-weights", o->no_weights,
                "sparsegpt: write only the mask, not sparsegpt-hf/ with the updated weights (a full copy of the model)");
  o->dev.add(sub);
  add_learn_options(sub, o->learn);
  sub->callback([o] {
    auto lo = o->dev.resolve();
    if (learn_method_known(o->p.method)) {
      PruneCommon c{o->model, o->file, o->out, o->split_on, o->tile, o->nsamples, o->seqlen, o->seed, o->force, lo,
                    describe(lo)};
      o->learn.l.method = o->p.method;
      o->learn.l.target_sparsity = o->p.sparsity;
      run_learn(c, o->learn);
      return;
    }
    PATCHLLM_CHECK(o->p.method == "magnitude" || o->p.method == "wanda" || o->p.method == "sparsegpt" ||
                       o->p.method == "maskllm-npz",
                   InvalidArgument, "--method ", o->p.method,
                   ": unknown (magnitude | wanda | sparsegpt | maskllm-npz | patch-tile | patch-joint | maskllm)");
    std::tie(o->p.tile_r, o->p.tile_c) = parse_tile(o->tile);
    PATCHLLM_CHECK(o->p.tile_r > 0 && o->p.tile_c > 0 && o->p.tile_c % 4 == 0, InvalidArgument, "--tile ", o->tile,
                   ": sizes must be positive and the width a multiple of 4");
    // Flags before the (slow) model load and calibration.
    prune_check_pattern(o->p.pattern, o->p.sparsity);
    std::string mask_path = path_join(o->out, "masks.safetensors");
    PATCHLLM_CHECK(o->force || !file_exists(mask_path), InvalidArgument, mask_path,
                   ": exists (use --force to overwrite)");
    double t0 = now_seconds();
    auto model = Model::load(o->model, lo);
    std::string desc, fp = model_fingerprint(o->model, &desc);
    MaskSet ms;
    std::vector<std::string> inputs = {path_join(o->model, "config.json")};
    if (o->p.method == "maskllm-npz") {
      PATCHLLM_CHECK(!o->from.empty(), InvalidArgument, "--method maskllm-npz needs --from FILE.npz");
      std::map<std::string, std::vector<int64_t>> shapes;
      for (auto& [name, slot] : model->linears()) shapes[name] = {(*slot)->weight.size(0), (*slot)->weight.size(1)};
      ms = mask_load_npz(o->from, shapes);
      ms.tile_r = o->p.tile_r;
      ms.tile_c = o->p.tile_c;
      for (auto& [n, lm] : ms.masks)
        if (lm.tile_map.defined()) lm.tile_map = mask_tile_map_full(lm.keep.size(0), lm.keep.size(1), ms.tile_r,
                                                                    ms.tile_c);
      inputs.push_back(o->from);
    } else {
      torch::Tensor windows;
      if (o->p.method != "magnitude") {
        PATCHLLM_CHECK(!o->file.empty(), InvalidArgument, "--method ", o->p.method, " needs calibration text (-f)");
        PATCHLLM_CHECK(file_exists(o->file), InvalidArgument, o->file, ": calibration text not found");
        auto tok = tokenizer_load(o->model);
        auto ids = tokenize_documents(*tok, file_read(o->file), unescape(o->split_on));
        windows = prune_calibration_windows(ids, o->nsamples, o->seqlen, o->seed, o->file);
        ms.meta["calibration_sha256"] = sha256_file(o->file);
        ms.meta["calibration_file"] = o->file;
        ms.meta["nsamples"] = std::to_string(o->nsamples);
        ms.meta["seqlen"] = std::to_string(o->seqlen);
        inputs.push_back(o->file);
        log_info("calibration: ", o->nsamples, " windows of ", o->seqlen, " tokens from ", o->file, " (", ids.size(),
                 " tokens, seed ", o->seed, ")");
      }
      ms = [&] {
        auto r = prune_model(*model, windows, o->p);
        r.meta.insert(ms.meta.begin(), ms.meta.end());
        return r;
      }();
    }
    ms.fingerprint = fp;
    ms.fingerprint_desc = desc;
    ms.meta["method"] = o->p.method;
    ms.meta["target_sparsity"] = str(o->p.pattern == "2:4" && o->p.method != "maskllm-npz" ? 0.5 : o->p.sparsity);
    ms.meta["seed"] = std::to_string(o->seed);
    if (o->p.method == "sparsegpt")
      ms.meta["note"] = "SparseGPT also updated the kept weights (sparsegpt-hf/); the mask alone on frozen weights "
                        "is what PATCH mask learning uses";
    auto prov = provenance_json(inputs);
    ms.meta["patchllm_provenance"] = prov.dump();
    dir_create(o->out);
    mask_save(mask_path, ms);
    log_info("wrote ", mask_path, ": ", ms.masks.size(), " matrices, sparsity ", ms.sparsity());
    // A fresh process: the allocator's peak since start is the job's (no reset: before the model is on the GPU
    // the allocator is not initialised and resetting throws).
    const double prune_seconds = now_seconds() - t0, peak_gib = cuda_peak_gib(lo.device, false);
    if (o->p.method == "sparsegpt" && !o->no_weights) {
      std::map<std::string, torch::Tensor> weights;
      for (auto& [name, slot] : model->linears()) weights[name] = (*slot)->weight;
      ExportOptions eo;
      eo.force = o->force;
      eo.provenance = prov;
      export_hf(o->model, path_join(o->out, "sparsegpt-hf"), ms, weights, eo);
    }
    nlohmann::json j;
    j["method"] = o->p.method;
    j["pattern"] = ms.pattern;
    j["target_sparsity"] = ms.meta["target_sparsity"];
    j["achieved_sparsity"] = ms.sparsity();
    j["tile"] = o->tile;
    j["nsamples"] = o->nsamples;
    j["seqlen"] = o->seqlen;
    j["seed"] = o->seed;
    j["seconds"] = now_seconds() - t0;
    j["prune_seconds"] = prune_seconds;  // load + calibration + pruning, before any weight export
    if (lo.device.is_cuda()) j["cuda_peak_gib"] = peak_gib;  // caching-allocator peak (tensors, not the context)
    j["device"] = describe(lo);
    j["base_model"] = {{"dir", o->model}, {"fingerprint", fp}, {"desc", desc}};
    for (const auto& [name, lm] : ms.masks)
      j["matrices"][name] = 1.0 - lm.keep.to(torch::kFloat64).mean().item<double>();
    j["provenance"] = prov;
    write_json(path_join(o->out, "prune_report.json"), j);
    std::printf("%s %s sparsity %.6f -> %s\n", o->p.method.c_str(), ms.pattern.c_str(), ms.sparsity(),
                mask_path.c_str());
  });
}

}  // namespace patchllm::cli
