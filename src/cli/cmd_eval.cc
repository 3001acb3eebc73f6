// patchllm eval ppl -m DIR -f TEXT [-c CTX] [--json OUT]
#include <cstdio>

#include "cli/common.h"
#include "core/file.h"
#include "core/log.h"
#include "core/provenance.h"
#include "eval/ppl.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace patchllm::cli {

void register_eval(CLI::App& app) {
  auto* ev = app.add_subcommand("eval", "evaluate a model");
  ev->require_subcommand(1);
  struct Opts {
    std::string model, file, json;
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
  sub->add_option("--json", o->json, "write results as JSON to this file ('-' = stdout)");
  o->dev.add(sub);
  sub->callback([o] {
    auto lo = o->dev.resolve();
    PATCHLLM_CHECK(file_exists(o->file), InvalidArgument, o->file, ": text file not found");
    std::string text = file_read(o->file);
    PATCHLLM_CHECK(!text.empty(), InvalidArgument, o->file, ": text file is empty");
    auto tok = tokenizer_load(o->model);
    double t0 = now_seconds();
    auto ids = tok->encode(text, true);
    log_info("tokenized ", o->file, ": ", ids.size(), " tokens in ", now_seconds() - t0, " s");
    auto model = Model::load(o->model, lo);
    auto r = ppl_evaluate(*model, ids, o->ppl);
    std::fprintf(stderr, "Final estimate: PPL = %.4f +/- %.4f (%lld windows of %lld, %.1f s)\n", r.ppl, r.ppl_stderr,
                 static_cast<long long>(r.n_windows), static_cast<long long>(r.ctx), r.seconds);
    std::printf("%.4f\n", r.ppl);
    if (!o->json.empty()) {
      auto j = r.to_json();
      j["model"] = o->model;
      j["dataset"] = o->file;
      j["device"] = describe(lo);
      std::vector<std::string> inputs = {o->file, path_join(o->model, "config.json")};
      for (const auto& f : Checkpoint(o->model).files()) inputs.push_back(f);
      j["provenance"] = provenance_json(inputs);
      write_json(o->json, j);
    }
  });
}

}  // namespace patchllm::cli
