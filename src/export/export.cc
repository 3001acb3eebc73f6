#include "export/export.h"

#include <climits>
#include <cstdlib>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/safetensors.h"

namespace patchllm {

namespace {
std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : p;
}
}  // namespace

void export_check_output(const std::string& model_dir, const std::string& out, bool force) {
  PATCHLLM_CHECK(real(out) != real(model_dir), InvalidArgument, out, ": output is the input model directory");
  bool exists = file_exists(out) || file_exists(path_join(out, "model.safetensors")) ||
                file_exists(path_join(out, "config.json"));
  PATCHLLM_CHECK(!exists || force, InvalidArgument, out, ": output exists (use --force to overwrite)");
}

void export_hf(const std::string& model_dir, const std::string& out_dir, const MaskSet& masks,
               const std::map<std::string, torch::Tensor>& weights, const ExportOptions& opt) {
  export_check_output(model_dir, out_dir, opt.force);
  Checkpoint ckpt(model_dir);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& name : ckpt.names()) {
    auto t = ckpt.load(name);
    auto it = masks.masks.find(name);
    if (it != masks.masks.end()) {
      auto w = weights.count(name) ? weights.at(name).to(torch::kCPU).to(t.scalar_type()) : t;
      PATCHLLM_CHECK(w.sizes() == t.sizes(), InvalidArgument, "export: ", name, " is ", w.sizes(), ", base has ",
                     t.sizes());
      t = mask_weight(w, it->second.keep).contiguous();
    }
    tensors[name] = t;
  }
  for (const auto& [name, lm] : masks.masks)
    PATCHLLM_CHECK(ckpt.has(name), InvalidArgument, "export: mask entry ", name, " is not in ", model_dir);
  dir_create(out_dir);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "tokenizer.model", "added_tokens.json", "vocab.json", "merges.txt"}) {
    std::string src = path_join(model_dir, f);
    if (file_exists(src)) file_write_atomic(path_join(out_dir, f), file_read(src));
  }
  std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (!opt.provenance.is_null()) meta["patchllm_provenance"] = opt.provenance.dump();
  meta["patchllm_mask_method"] = masks.meta.count("method") ? masks.meta.at("method") : "";
  meta["patchllm_mask_pattern"] = masks.pattern;
  meta["patchllm_sparsity"] = str(masks.sparsity());
  meta["patchllm_base_model_fingerprint"] = masks.fingerprint;
  safetensors_write(path_join(out_dir, "model.safetensors"), tensors, meta);
  log_info("exported ", tensors.size(), " tensors to ", out_dir, " (decoder-linear sparsity ", masks.sparsity(), ")");
}

}  // namespace patchllm
