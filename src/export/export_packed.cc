// export --format packed: a model directory whose masked decoder linears are packed hybrid dense/2:4 weights.
#include <unistd.h>

#include <cstdio>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "export/export.h"
#include "io/safetensors.h"
#include "model/packed_linear.h"

namespace patchllm {

void export_packed(const std::string& model_dir, const std::string& out_dir, const MaskSet& masks,
                   c10::ScalarType dtype, const std::string& masks_file, const ExportOptions& opt) {
  export_check_output(model_dir, out_dir, opt.force);
  PATCHLLM_CHECK(dtype == torch::kBFloat16 || dtype == torch::kHalf, InvalidArgument,
                 "export: packed dtype must be bf16 or fp16");
  PATCHLLM_CHECK(masks.pattern == "2:4", InvalidArgument, masks_file, ": pattern '", masks.pattern,
                 "' cannot be packed (needs a 2:4 or hybrid dense/2:4 tile mask)");
  PATCHLLM_CHECK(masks.tile_r > 0 && masks.tile_r % HYBRID_GROUP_ROWS == 0 && masks.tile_c > 0 &&
                     masks.tile_c % HYBRID_SLAB_COLS == 0,
                 InvalidArgument, masks_file, ": tile size ", masks.tile_r, "x", masks.tile_c,
                 " cannot be packed (rows must be a multiple of 16 and columns of 64; the CUDA kernels need 128x128)");
  if (masks.tile_r != 128 || masks.tile_c != 128)
    log_warn(masks_file, ": tiles ", masks.tile_r, "x", masks.tile_c, " run on the CPU reference only (CUDA needs 128x128)");
  Checkpoint ckpt(model_dir);
  checkpoint_require_dense(ckpt, model_dir, "export");
  for (const auto& [name, lm] : masks.masks)
    PATCHLLM_CHECK(ckpt.has(name), InvalidArgument, "export: mask entry ", name, " is not in ", model_dir);
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> meta = {{"format", kPackedFormat},
                                             {"patchllm_format_version", std::to_string(HYBRID_FORMAT_VERSION)},
                                             {"patchllm_packed_dtype", safetensors_dtype_from_torch(dtype)},
                                             {"patchllm_tile_size", str(masks.tile_r, "x", masks.tile_c)}};
  int64_t sparse_tiles = 0, tiles = 0, packed_bytes = 0, dense_bytes = 0;
  for (const auto& name : ckpt.names()) {
    auto t = ckpt.load(name);
    auto it = masks.masks.find(name);
    if (it == masks.masks.end()) {
      tensors[name] = t;
      continue;
    }
    const LinearMask& lm = it->second;
    PATCHLLM_CHECK(name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 && t.dim() == 2,
                   InvalidArgument, "export: mask entry ", name, " is not a 2-D .weight");
    auto w = t.to(dtype);
    if (dtype == torch::kHalf)
      PATCHLLM_CHECK(torch::isfinite(w).all().item<bool>() || !torch::isfinite(t).all().item<bool>(), InvalidArgument,
                     "export: ", name, " has values beyond the fp16 range (use --dtype bf16)");
    torch::Tensor tmap = lm.tile_map.defined() ? lm.tile_map
                                               : mask_tile_map_full(t.size(0), t.size(1), masks.tile_r, masks.tile_c);
    HybridWeight hw;
    try {
      hw = hybrid_pack(w, tmap, lm.keep, int(masks.tile_r), int(masks.tile_c));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(str(masks_file, ": ", name, ": ", e.what()));
    }
    const std::string prefix = name.substr(0, name.size() - 7);
    packed_tensors_add(prefix, hw, tensors, meta);
    for (uint8_t k : hw.layout.kinds) sparse_tiles += k == HYBRID_TILE_SPARSE24;
    tiles += int64_t(hw.layout.kinds.size());
    packed_bytes += hw.data.numel();
    dense_bytes += w.numel() * 2;
  }
  if (!opt.provenance.is_null()) meta["patchllm_provenance"] = opt.provenance.dump();
  meta["patchllm_mask_method"] = masks.meta.count("method") ? masks.meta.at("method") : "";
  meta["patchllm_mask_pattern"] = masks.pattern;
  meta["patchllm_sparsity"] = str(masks.sparsity());
  meta["patchllm_sparse_tile_fraction"] = str(tiles ? double(sparse_tiles) / double(tiles) : 0.0);
  meta["patchllm_base_model_fingerprint"] = masks.fingerprint;

  // Everything goes into a sibling temp directory first; the output appears (or is replaced) by rename only.
  std::string out = out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const std::string tmp = str(out, ".tmp.", ::getpid()), old = str(out, ".old.", ::getpid());
  try {
    std::string why = dir_remove_all(tmp);
    PATCHLLM_CHECK(why.empty(), Error, tmp, ": cannot remove a stale temp directory (", why, ")");
    dir_create(tmp);
    for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "tokenizer.model", "added_tokens.json", "vocab.json",
                          "merges.txt"}) {
      std::string src = path_join(model_dir, f);
      if (file_exists(src)) file_write_atomic(path_join(tmp, f), file_read(src));
    }
    safetensors_write(path_join(tmp, "model.safetensors"), tensors, meta);
    tensors.clear();
    if (dir_exists(out) || file_exists(out)) {
      why = path_rename(out, old);
      PATCHLLM_CHECK(why.empty(), Error, out, ": cannot move the old output aside (", why, ")");
    }
    why = path_rename(tmp, out);
    if (!why.empty()) {
      if (dir_exists(old)) path_rename(old, out);  // put the old output back
      throw Error(str(out, ": cannot rename ", tmp, " into place (", why, ")"));
    }
    why = dir_remove_all(old);
    if (!why.empty()) log_warn(old, ": the previous output could not be removed (", why, ")");
  } catch (...) {
    dir_remove_all(tmp);
    throw;
  }
  log_info("exported packed hybrid model to ", out, ": ", tiles, " tiles (", sparse_tiles, " 2:4), linears ",
           packed_bytes / 1e6, " MB packed vs ", dense_bytes / 1e6, " MB dense");
}

}  // namespace patchllm
