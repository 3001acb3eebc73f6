// Mask set, mask file (safetensors), fingerprint, apply. The npz reader/writer is in npz.cc.
#include "mask/mask.h"

#include <cstdio>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "core/provenance.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/packed_linear.h"

namespace patchllm {

namespace {
// Larger than any weight side; keeps the tile-grid arithmetic (out + r - 1) / r far from overflow.
constexpr int64_t kMaxTileSide = int64_t{1} << 20;
}  // namespace

int64_t MaskSet::total() const {
  int64_t n = 0;
  for (const auto& [k, m] : masks) n += m.keep.numel();
  return n;
}

int64_t MaskSet::kept() const {
  int64_t n = 0;
  for (const auto& [k, m] : masks) n += m.keep.sum().item<int64_t>();
  return n;
}

torch::Tensor mask_packbits(const torch::Tensor& keep) {
  auto flat = keep.to(torch::kCPU).to(torch::kBool).contiguous().view(-1);
  int64_t n = flat.numel(), nb = (n + 7) / 8;
  auto bits = torch::zeros({nb * 8}, torch::kUInt8);
  bits.narrow(0, 0, n).copy_(flat.to(torch::kUInt8));
  auto b = bits.view({nb, 8}).to(torch::kInt32);
  auto w = torch::tensor({128, 64, 32, 16, 8, 4, 2, 1}, torch::kInt32);
  return (b * w).sum(1).to(torch::kUInt8);
}

torch::Tensor mask_unpackbits(const torch::Tensor& packed, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto s : shape)
    PATCHLLM_CHECK(s >= 0 && !__builtin_mul_overflow(n, s, &n), FormatError, "mask shape ",
                   c10::IntArrayRef(shape), " is negative or overflows");
  PATCHLLM_CHECK(packed.numel() == (n + 7) / 8, FormatError, "packed mask has ", packed.numel(), " bytes, expected ",
                 (n + 7) / 8, " for ", n, " elements");
  auto p = packed.to(torch::kCPU).to(torch::kInt32).contiguous().view({-1, 1});
  auto sh = torch::tensor({7, 6, 5, 4, 3, 2, 1, 0}, torch::kInt32).view({1, 8});
  auto bits = torch::bitwise_and(torch::bitwise_right_shift(p, sh), 1).view(-1).narrow(0, 0, n);
  return bits.to(torch::kBool).view(shape).contiguous();
}

torch::Tensor mask_tile_map_full(int64_t out, int64_t in, int64_t r, int64_t c) {
  return torch::ones({(out + r - 1) / r, (in + c - 1) / c}, torch::kUInt8);
}

torch::Tensor mask_tile_density(const torch::Tensor& keep, int64_t r, int64_t c) {
  auto k = keep.to(torch::kCPU).to(torch::kFloat32);
  int64_t out = k.size(0), in = k.size(1), tr = (out + r - 1) / r, tc = (in + c - 1) / c;
  auto padded = torch::zeros({tr * r, tc * c});
  padded.narrow(0, 0, out).narrow(1, 0, in).copy_(k);
  auto ones = torch::zeros({tr * r, tc * c});
  ones.narrow(0, 0, out).narrow(1, 0, in).fill_(1);
  auto sum = [&](const torch::Tensor& t) { return t.view({tr, r, tc, c}).sum({1, 3}); };
  return (sum(padded) / sum(ones)).contiguous();
}

void mask_validate_24(const torch::Tensor& keep, const torch::Tensor& tile_map, int64_t r, int64_t c,
                      const std::string& where) {
  int64_t out = keep.size(0), in = keep.size(1);
  PATCHLLM_CHECK(in % 4 == 0, FormatError, where, ": in_features ", in, " is not a multiple of 4 (2:4 groups)");
  PATCHLLM_CHECK(c % 4 == 0, FormatError, where, ": tile width ", c, " is not a multiple of 4");
  PATCHLLM_CHECK(tile_map.dim() == 2 && tile_map.size(0) == (out + r - 1) / r && tile_map.size(1) == (in + c - 1) / c,
                 FormatError, where, ": tile_map shape ", tile_map.sizes(), " does not match [", (out + r - 1) / r,
                 ", ", (in + c - 1) / c, "] for a [", out, ", ", in, "] weight with ", r, "x", c, " tiles");
  // Expand the tile map to elements, then per group of 4: 2:4 tiles keep exactly 2, dense tiles keep 4.
  auto t = tile_map.to(torch::kCPU).to(torch::kBool);
  auto full = t.repeat_interleave(r, 0).repeat_interleave(c, 1).narrow(0, 0, out).narrow(1, 0, in);
  auto groups = keep.to(torch::kCPU).to(torch::kInt32).reshape({out, in / 4, 4}).sum(2);
  auto is24 = full.reshape({out, in / 4, 4}).select(2, 0);
  auto bad24 = torch::logical_and(is24, groups != 2);
  auto bad_dense = torch::logical_and(is24.logical_not(), groups != 4);
  auto bad = torch::logical_or(bad24, bad_dense).nonzero();
  if (bad.size(0) > 0) {
    int64_t row = bad[0][0].item<int64_t>(), g = bad[0][1].item<int64_t>();
    throw FormatError(str(where, ": group at row ", row, " columns ", 4 * g, "..", 4 * g + 3, " keeps ",
                          groups[row][g].item<int>(), " of 4 in a ", is24[row][g].item<bool>() ? "2:4" : "dense",
                          " tile (", bad.size(0), " bad groups)"));
  }
}

std::string model_fingerprint(const std::string& model_dir, std::string* desc) {
  ModelConfig c = config_load(model_dir);
  std::string s = str(c.architecture, " hidden=", c.hidden_size, " inter=", c.intermediate_size, " layers=",
                      c.num_layers, " heads=", c.num_heads, " kv_heads=", c.num_kv_heads, " vocab=", c.vocab_size);
  if (desc) *desc = s;
  Checkpoint ckpt(model_dir);
  checkpoint_require_dense(ckpt, model_dir, "the model fingerprint (masks, pruning, learning)");
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files;
  for (const auto& f : ckpt.files()) files[f] = std::make_unique<SafetensorsFile>(f);
  std::string buf = s + "\n";
  for (int64_t i = 0; i < c.num_layers; ++i) {
    for (const auto& n : decoder_linear_names()) {
      std::string name = str("model.layers.", i, ".", n, ".weight");
      const SafetensorsFile* sf = nullptr;
      for (const auto& [p, f] : files)
        if (f->has(name)) sf = f.get();
      PATCHLLM_CHECK(sf, FormatError, model_dir, ": tensor ", name, " not found");
      const auto& e = sf->entry(name);
      buf += name + " " + e.dtype;
      for (auto d : e.shape) buf += " " + std::to_string(d);
      size_t n_bytes = e.end - e.begin, k = std::min<size_t>(4096, n_bytes);
      const uint8_t* p = sf->raw(name);
      buf += " " + sha256_hex(p, k) + " " + sha256_hex(p + n_bytes - k, k) + "\n";
    }
  }
  return sha256_hex(buf.data(), buf.size());
}

void mask_save(const std::string& path, const MaskSet& m) {
  if (path.size() > 4 && path.substr(path.size() - 4) == ".npz") return mask_save_npz(path, m);
  std::map<std::string, torch::Tensor> t;
  for (const auto& [name, lm] : m.masks) {
    t[name + ".shape"] = torch::tensor({lm.keep.size(0), lm.keep.size(1)}, torch::kInt64);
    if (m.pattern == "unstructured") {
      t[name + ".mask"] = mask_packbits(lm.keep);
    } else {
      t[name + ".mask24"] = mask_packbits(lm.keep);
      t[name + ".tile_map"] = lm.tile_map.defined() ? lm.tile_map.to(torch::kUInt8)
                                                    : mask_tile_map_full(lm.keep.size(0), lm.keep.size(1), m.tile_r,
                                                                         m.tile_c);
    }
    if (lm.tile_scores.defined()) t[name + ".tile_scores"] = lm.tile_scores.to(torch::kFloat32).contiguous();
  }
  std::map<std::string, std::string> meta = m.meta;
  meta["format"] = "patchllm-mask";
  meta["patchllm_format_version"] = std::to_string(kMaskFormatVersion);
  meta["pattern"] = m.pattern;
  meta["tile_size"] = str(m.tile_r, "x", m.tile_c);
  meta["group_axis"] = "in";
  meta["bit_order"] = "row-major flattened, MSB first (np.packbits), 1 = keep";
  meta["achieved_sparsity"] = str(m.sparsity());
  meta["base_model_fingerprint"] = m.fingerprint;
  meta["base_model"] = m.fingerprint_desc;
  meta["tool_version"] = version_string();
  safetensors_write(path, t, meta);
}

MaskSet mask_load(const std::string& path) {
  PATCHLLM_CHECK(file_exists(path), InvalidArgument, path, ": mask file not found");
  if (path.size() > 4 && path.substr(path.size() - 4) == ".npz") return mask_load_npz(path, {});
  SafetensorsFile f(path);
  const auto& md = f.metadata();
  auto get = [&](const std::string& k) {
    auto it = md.find(k);
    PATCHLLM_CHECK(it != md.end(), FormatError, path, ": not a patchllm mask file (metadata '", k, "' missing)");
    return it->second;
  };
  PATCHLLM_CHECK(get("format") == "patchllm-mask", FormatError, path, ": not a patchllm mask file (format '",
                 get("format"), "')");
  std::string ver = get("patchllm_format_version");
  PATCHLLM_CHECK(ver == std::to_string(kMaskFormatVersion), FormatError, path, ": mask format version ", ver,
                 " is not supported (this build reads version ", kMaskFormatVersion, ")");
  MaskSet m;
  m.pattern = get("pattern");
  PATCHLLM_CHECK(m.pattern == "2:4" || m.pattern == "unstructured", FormatError, path, ": unknown pattern '",
                 m.pattern, "'");
  std::string ts = get("tile_size");
  PATCHLLM_CHECK(std::sscanf(ts.c_str(), "%ldx%ld", &m.tile_r, &m.tile_c) == 2 && m.tile_r > 0 && m.tile_c > 0 &&
                     m.tile_r <= kMaxTileSide && m.tile_c <= kMaxTileSide,
                 FormatError, path, ": bad tile_size '", ts, "'");
  m.fingerprint = get("base_model_fingerprint");
  m.fingerprint_desc = md.count("base_model") ? md.at("base_model") : "";
  m.meta = md;
  for (const auto& [name, e] : f.entries()) {
    if (name.size() < 6 || name.substr(name.size() - 6) != ".shape") continue;
    std::string p = name.substr(0, name.size() - 6);
    auto shape = f.load(name);
    PATCHLLM_CHECK(e.dtype == "I64" && shape.numel() == 2, FormatError, path, ": ", name, " must be I64 [2]");
    std::vector<int64_t> sh = {shape[0].item<int64_t>(), shape[1].item<int64_t>()};
    PATCHLLM_CHECK(sh[0] > 0 && sh[1] > 0, FormatError, path, ": ", name, " has a non-positive dimension");
    std::string mk = p + (m.pattern == "unstructured" ? ".mask" : ".mask24");
    PATCHLLM_CHECK(f.has(mk), FormatError, path, ": ", mk, " missing");
    PATCHLLM_CHECK(f.entry(mk).dtype == "U8", FormatError, path, ": ", mk, " must be U8");
    LinearMask lm;
    try {
      lm.keep = mask_unpackbits(f.load(mk), sh);
    } catch (const FormatError& err) {
      throw FormatError(str(path, ": ", mk, ": ", err.what()));
    }
    if (m.pattern != "unstructured") {
      PATCHLLM_CHECK(f.has(p + ".tile_map"), FormatError, path, ": ", p, ".tile_map missing");
      lm.tile_map = f.load(p + ".tile_map").to(torch::kUInt8);
      mask_validate_24(lm.keep, lm.tile_map, m.tile_r, m.tile_c, path + ": " + p);
    }
    if (f.has(p + ".tile_scores")) {
      lm.tile_scores = f.load(p + ".tile_scores").to(torch::kFloat32);
      const std::vector<int64_t> grid = {(sh[0] + m.tile_r - 1) / m.tile_r, (sh[1] + m.tile_c - 1) / m.tile_c};
      PATCHLLM_CHECK(lm.tile_scores.sizes() == c10::IntArrayRef(grid), FormatError, path, ": ", p, ".tile_scores is ",
                     lm.tile_scores.sizes(), ", the tile grid is ", c10::IntArrayRef(grid));
    }
    m.masks[p] = lm;
  }
  PATCHLLM_CHECK(!m.masks.empty(), FormatError, path, ": mask file holds no masks");
  return m;
}

std::map<std::string, std::vector<int64_t>> mask_model_shapes(const std::string& model_dir) {
  ModelConfig c = config_load(model_dir);
  Checkpoint ckpt(model_dir);
  checkpoint_require_dense(ckpt, model_dir, "a mask");
  std::map<std::string, std::vector<int64_t>> out;
  for (int64_t i = 0; i < c.num_layers; ++i)
    for (const auto& n : decoder_linear_names()) {
      std::string name = str("model.layers.", i, ".", n, ".weight");
      PATCHLLM_CHECK(ckpt.has(name), FormatError, model_dir, ": tensor ", name, " not found");
      out[name] = ckpt.entry(name).shape;
    }
  return out;
}

void mask_check_model(const MaskSet& m, const std::string& model_dir) {
  std::string desc;
  if (!m.fingerprint.empty()) {
    std::string fp = model_fingerprint(model_dir, &desc);
    PATCHLLM_CHECK(fp == m.fingerprint, InvalidArgument, "mask was made for another model (fingerprint ",
                   m.fingerprint.substr(0, 12), ", ", m.fingerprint_desc, ") than ", model_dir, " (fingerprint ",
                   fp.substr(0, 12), ", ", desc, ")");
  }
  auto shapes = mask_model_shapes(model_dir);
  for (const auto& [name, shape] : shapes) {
    auto it = m.masks.find(name);
    PATCHLLM_CHECK(it != m.masks.end(), InvalidArgument, "mask has no entry for ", name, " of ", model_dir);
    PATCHLLM_CHECK(it->second.keep.size(0) == shape[0] && it->second.keep.size(1) == shape[1], InvalidArgument,
                   "mask for ", name, " is ", it->second.keep.sizes(), " but ", model_dir, " has [", shape[0], ", ",
                   shape[1], "]");
  }
  for (const auto& [name, lm] : m.masks)
    PATCHLLM_CHECK(shapes.count(name), InvalidArgument, "mask entry ", name, " is not a decoder linear of ", model_dir);
}

MaskSet mask_load_checked(const std::string& path, const std::string& model_dir) {
  MaskSet m = path.size() > 4 && path.substr(path.size() - 4) == ".npz"
                  ? mask_load_npz(path, model_dir.empty() ? std::map<std::string, std::vector<int64_t>>{}
                                                           : mask_model_shapes(model_dir))
                  : mask_load(path);
  if (!model_dir.empty()) mask_check_model(m, model_dir);
  return m;
}

torch::Tensor mask_weight(const torch::Tensor& w, const torch::Tensor& keep) {
  auto k = keep.to(w.device()).to(torch::kBool);
  return torch::where(k, w, torch::zeros({}, w.options()));
}

void mask_apply(Model& model, const MaskSet& m) {
  model_require_dense(model, "applying a mask");
  for (auto& [name, slot] : model.linears()) {
    auto it = m.masks.find(name);
    if (it == m.masks.end()) continue;
    (*slot)->weight = mask_weight((*slot)->weight, it->second.keep);
  }
}

MaskSet mask_load_for_model(const std::string& path, const std::string& model_dir, Model& model) {
  MaskSet m = mask_load_checked(path, model_dir);
  mask_apply(model, m);
  return m;
}

}  // namespace patchllm
