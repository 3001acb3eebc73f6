// patchllm eval ppl -m DIR -f TEXT [-c CTX] [--chunks N] [--head-rows R] [--masks F] [--json OUT]
// patchllm eval logits -m DIR -i IDS.safetensors -o OUT.safetensors [--masks F]
#include <cstdio>

#include "cli/common.h"
#include "core/file.h"
#include "core/log.h"
#include "core/provenance.h"
#include "eval/ppl.h"
#include "io/safetensors.h"
#include "mask/mask.h"
#include "tokenizer/tokenizer.h"

namespace patchllm::cli {


void register_eval(CLI::App& app) {
  auto* ev = app.add_subcommand("eval", "evaluate a model");
  ev->require_subcommand(1);
  struct Opts {
    std::string model, file, json, split_on, masks;
    PplOptions ppl;
    DeviceOptions dev;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = ev->add_subcommand("ppl", "perplexity, paper protocol (non-overlapping windows, tail dropped)");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory")->required()->envname("PATCHLLM_ARG_MODEL");
  sub->add_option("-f,--file", o->file, "text file (e.g. wiki.test.raw)")->required();
  sub->add_option("-c,--ctx-size", o->ppl.ctx, "window length; 0 = min(4096, model max)")->capture_default_str();
  sub->add_option("-b,--batch-size", o->ppl.batch, "windows per forward pass")->capture_default_str();
  sub->add_option("--chunks", o->ppl.max_windows, "evaluate only the first N windows (0 = all)")->capture_default_str();
  sub->add_option("--head-rows", o->ppl.head_rows,
                  "positions per LM-head + log-softmax chunk (bounds the logits in memory; 0 = a whole batch at once)")
      ->capture_default_str();
  sub->add_option("--split-on", o->split_on,
                  "document separator (\\n escapes allowed): each document is tokenized with BOS, separators "
                  "dropped, documents concatenated (e.g. TinyStories: '\\n<|endoftext|>\\n')");
  sub->add_option("--json", o->json, "write results as JSON to this file ('-' = stdout)");
  sub->add_option("--masks", o->masks, "apply this mask file (masks.safetensors or MaskLLM .npz) before evaluating");
  o->dev.add(sub);
  sub->callback([o] {
    auto lo = o->dev.resolve();
    PATCHLLM_CHECK(o->ppl.head_rows >= 0, InvalidArgument, "--head-rows must be >= 0 (0 = all at once), got ",
                   o->ppl.head_rows);
    PATCHLLM_CHECK(file_exists(o->file), InvalidArgument, o->file, ": text file not found");
    std::string text = file_read(o->file);
    PATCHLLM_CHECK(!text.empty(), InvalidArgument, o->file, ": text file is empty");
    auto tok = tokenizer_load(o->model);
    double t0 = now_seconds();
    std::string sep = unescape(o->split_on);
    std::vector<int> ids = tokenize_documents(*tok, text, sep);
    log_info("tokenized ", o->file, ": ", ids.size(), " tokens in ", now_seconds() - t0, " s, ids sha256 (int32 LE) ",
             token_ids_sha256(ids));
    auto model = Model::load(o->model, lo);
    double mask_sparsity = -1;
    if (!o->masks.empty()) {
      auto ms = mask_load_for_model(o->masks, o->model, *model);
      mask_sparsity = ms.sparsity();
      log_info("applied masks ", o->masks, ": decoder-linear sparsity ", mask_sparsity);
    }
    if (lo.device.is_cuda()) model_fuse_projections(*model);  // fewer launches; CPU results stay bit for bit as before
    auto r = ppl_evaluate(*model, ids, o->ppl);
    std::fprintf(stderr, "Final estimate: PPL = %.4f +/- %.4f (%lld windows of %lld, %.1f s)\n", r.ppl, r.ppl_stderr,
                 static_cast<long long>(r.n_windows), static_cast<long long>(r.ctx), r.seconds);
    std::printf("%.4f\n", r.ppl);
    if (!o->json.empty()) {
      auto j = r.to_json();
      if (!sep.empty()) j["join"] = "documents split on '" + o->split_on + "', each tokenized with BOS, concatenated";
      j["model"] = o->model;
      if (!o->masks.empty()) j["masks"] = {{"file", o->masks}, {"sparsity", mask_sparsity}};
      j["dataset"] = o->file;
      j["device"] = describe(lo);
      std::vector<std::string> inputs = {o->file, path_join(o->model, "config.json")};
      if (!o->masks.empty()) inputs.push_back(o->masks);
      Checkpoint ckpt(o->model);
      for (const auto& f : ckpt.files()) inputs.push_back(f);
      j["provenance"] = provenance_json(inputs);
      write_json(o->json, j);
    }
  });

  // eval logits: raw logits for given token ids, for cross-checks against other engines (HF transformers).
  struct LogitOpts {
    std::string model, input, output, masks;
    DeviceOptions dev;
  };
  auto lo = std::make_shared<LogitOpts>();
  auto* lg = ev->add_subcommand("logits", "write fp32 logits for the token ids in a safetensors file");
  lg->add_option("-m,--model", lo->model, "Hugging Face model directory")->required();
  lg->add_option("-i,--input", lo->input, "safetensors with input_ids [B,T] (I64) and optional attention_mask")
      ->required();
  lg->add_option("-o,--output", lo->output, "output safetensors with 'logits' [B,T,V] F32")->required();
  lg->add_option("--masks", lo->masks, "apply this mask file before the forward");
  lo->dev.add(lg);
  lg->callback([lo] {
    auto opt = lo->dev.resolve();
    SafetensorsFile in(lo->input);
    auto ids = in.load("input_ids").to(torch::kLong);
    torch::Tensor mask;
    if (in.has("attention_mask")) mask = in.load("attention_mask").to(torch::kLong);
    auto model = Model::load(lo->model, opt);
    if (!lo->masks.empty()) mask_load_for_model(lo->masks, lo->model, *model);
    if (opt.device.is_cuda()) model_fuse_projections(*model);
    torch::NoGradGuard ng;
    auto logits = model->forward(ids, nullptr, mask);
    safetensors_write(lo->output, {{"logits", logits.to(torch::kCPU)}},
                      {{"patchllm_provenance", provenance_json({lo->input}).dump()}, {"device", describe(opt)}});
  });
}

}  // namespace patchllm::cli
