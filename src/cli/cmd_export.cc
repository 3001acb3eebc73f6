// patchllm export -m DIR --masks MASKS -o OUT [--format hf|packed|maskllm-npz] [--dtype bf16|fp16] [--force]
#include "cli/common.h"
#include "core/file.h"
#include "core/log.h"
#include "core/provenance.h"
#include "export/export.h"
#include "mask/mask.h"

namespace patchllm::cli {

void register_export(CLI::App& app) {
  struct Opts {
    std::string model, masks, out, format = "hf", dtype = "bf16";
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("export", "write a pruned Hugging Face model, a packed hybrid model or a MaskLLM "
                                           "mask_compressed.npz");
  sub->add_option("-m,--model", o->model, "base Hugging Face model directory")->required()
      ->envname("PATCHLLM_ARG_MODEL");
  sub->add_option("--masks", o->masks, "mask file (masks.safetensors or a MaskLLM .npz)")->required();
  sub->add_option("-o,--output", o->out, "output directory (hf) or .npz file/directory (maskllm-npz)")->required();
  sub->add_option("--format", o->format, "hf | packed | maskllm-npz")->capture_default_str();
  sub->add_option("--dtype", o->dtype, "packed weights: bf16 | fp16")->capture_default_str();
  sub->add_flag("--force", o->force, "overwrite an existing output");
  sub->callback([o] {
    PATCHLLM_CHECK(o->format == "hf" || o->format == "packed" || o->format == "maskllm-npz", InvalidArgument,
                   "--format '", o->format, "' is not hf, packed or maskllm-npz");
    PATCHLLM_CHECK(o->dtype == "bf16" || o->dtype == "fp16", InvalidArgument, "--dtype '", o->dtype,
                   "' is not bf16 or fp16");
    // Names, shapes and fingerprint come from the checkpoint headers: the model is never loaded whole.
    MaskSet ms = mask_load_checked(o->masks, o->model);
    if (o->format == "hf") {
      ExportOptions eo;
      eo.force = o->force;
      eo.provenance = provenance_json({o->masks, path_join(o->model, "config.json")});
      export_hf(o->model, o->out, ms, {}, eo);
    } else if (o->format == "packed") {
      ExportOptions eo;
      eo.force = o->force;
      eo.provenance = provenance_json({o->masks, path_join(o->model, "config.json")});
      export_packed(o->model, o->out, ms, o->dtype == "fp16" ? torch::kHalf : torch::kBFloat16, o->masks, eo);
    } else {
      std::string path = o->out;
      if (path.size() < 4 || path.substr(path.size() - 4) != ".npz") {
        dir_create(path);
        path = path_join(path, "mask_compressed.npz");
      }
      PATCHLLM_CHECK(o->force || !file_exists(path), InvalidArgument, path, ": exists (use --force to overwrite)");
      mask_save_npz(path, ms);
      log_info("wrote ", path, " (", ms.masks.size(), " masks)");
    }
  });
}

}  // namespace patchllm::cli
