#include "model/packed_linear.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "model/model.h"

namespace patchllm {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The six ordered_metadata nibbles (idx0 < idx1) a 2:4 chunk may carry.
constexpr uint32_t kValidNibbles = (1u << 0x4) | (1u << 0x8) | (1u << 0x9) | (1u << 0xC) | (1u << 0xD) | (1u << 0xE);

}  // namespace

torch::Tensor PackedHybridLinear::forward(const torch::Tensor& x) {
  const auto dt = x.scalar_type();
  torch::Tensor y = hybrid_linear(dt == hw.dtype ? x : x.to(hw.dtype), hw);
  if (dt != hw.dtype) y = y.to(dt);
  if (bias.defined()) y = y + bias.to(dt);
  return y;
}

void packed_tensors_add(const std::string& prefix, const HybridWeight& hw,
                        std::map<std::string, torch::Tensor>& tensors, std::map<std::string, std::string>& metadata) {
  const HybridLayout& L = hw.layout;
  tensors[prefix + kPackedData] = hw.data.to(torch::kCPU).contiguous();
  tensors[prefix + kPackedKinds] = hw.tile_kinds.to(torch::kCPU, torch::kUInt8).reshape({L.row_blocks, L.col_tiles});
  tensors[prefix + kPackedOffsets] = hw.tile_offsets.to(torch::kCPU, torch::kInt64).contiguous();
  nlohmann::json g = {{"rows", L.rows},           {"cols", L.cols},
                      {"tile_rows", L.tile_rows}, {"tile_cols", L.tile_cols},
                      {"dtype", safetensors_dtype_from_torch(hw.dtype)}, {"version", hw.version}};
  metadata[prefix + kPackedGeometry] = g.dump();
}

PackedCheckpoint::PackedCheckpoint(const Checkpoint& ckpt) : _ckpt(ckpt) {
  bool any_packed = false;
  for (const auto& n : ckpt.names()) any_packed = any_packed || ends_with(n, kPackedData);
  std::string tagged;
  for (const auto& f : ckpt.files()) {
    SafetensorsFile sf(f);
    for (const auto& [k, v] : sf.metadata()) _meta[k] = v;
    auto it = sf.metadata().find("format");
    if (it != sf.metadata().end() && it->second == kPackedFormat && tagged.empty()) tagged = f;
  }
  if (!any_packed && tagged.empty()) return;
  const std::string where = tagged.empty() ? ckpt.files()[0] : tagged;
  PATCHLLM_CHECK(!tagged.empty(), FormatError, where, ": holds packed hybrid tensors but no __metadata__ format '",
                 kPackedFormat, "'");
  auto v = _meta.find("patchllm_format_version");
  PATCHLLM_CHECK(v != _meta.end(), FormatError, where, ": packed hybrid file without patchllm_format_version");
  int version = 0;
  try {
    version = std::stoi(v->second);
  } catch (const std::exception&) {
  }
  PATCHLLM_CHECK(version >= 1 && version <= HYBRID_FORMAT_VERSION, FormatError, where, ": packed format version '",
                 v->second, "' is not supported (this patchllm reads 1..", HYBRID_FORMAT_VERSION, ")");
  _file = where;
}

HybridWeight PackedCheckpoint::load(const std::string& prefix, int64_t out, int64_t in) const {
  const std::string& f = _file.empty() ? _ckpt.files()[0] : _file;
  PATCHLLM_CHECK(is_packed(), FormatError, f, ": ", prefix, " is packed but the file is not a packed hybrid file");
  auto gi = _meta.find(prefix + kPackedGeometry);
  PATCHLLM_CHECK(gi != _meta.end(), FormatError, f, ": no __metadata__ ", prefix, kPackedGeometry);
  int64_t rows = 0, cols = 0;
  int tr = 0, tc = 0;
  std::string dtype;
  try {
    auto g = nlohmann::json::parse(gi->second);
    int64_t v[4];
    const char* keys[4] = {"rows", "cols", "tile_rows", "tile_cols"};
    for (int i = 0; i < 4; ++i)  // get<int>() of a float such as 1e30 would be undefined
      if (!json_int_in(g.at(keys[i]), 1, i < 2 ? INT64_MAX : INT32_MAX, &v[i]))
        throw FormatError(str(keys[i], " is not a positive integer"));
    rows = v[0], cols = v[1], tr = static_cast<int>(v[2]), tc = static_cast<int>(v[3]);
    dtype = g.at("dtype").get<std::string>();
  } catch (const std::exception& e) {
    throw FormatError(str(f, ": ", prefix, kPackedGeometry, " is not valid geometry JSON (", e.what(), ")"));
  }
  PATCHLLM_CHECK(rows == out && cols == in, FormatError, f, ": packed ", prefix, " is [", rows, ", ", cols,
                 "], config expects [", out, ", ", in, "]");
  std::string geo = hybrid_check_geometry(rows, cols, tr, tc);
  PATCHLLM_CHECK(geo.empty(), FormatError, f, ": packed ", prefix, ": ", geo);
  PATCHLLM_CHECK(dtype == "BF16" || dtype == "F16", FormatError, f, ": packed ", prefix, " has dtype ", dtype,
                 " (expected BF16 or F16)");
  const int64_t RB = hybrid_ceil_div(rows, tr), CT = hybrid_ceil_div(cols, tc);
  auto expect = [&](const char* suffix, const char* dt, std::vector<int64_t> shape) {
    std::string n = prefix + suffix;
    PATCHLLM_CHECK(_ckpt.has(n), FormatError, f, ": missing tensor ", n);
    const auto& e = _ckpt.entry(n);
    PATCHLLM_CHECK(e.dtype == dt && (shape.empty() ? e.shape.size() == 1 : e.shape == shape), FormatError, f,
                   ": tensor ", n, " is ", e.dtype, " ", c10::IntArrayRef(e.shape), ", expected ", dt, " ",
                   shape.empty() ? std::string("[bytes]") : patchllm::str(c10::IntArrayRef(shape)));
    return _ckpt.load(n).contiguous();
  };
  HybridWeight hw;
  hw.tile_kinds = expect(kPackedKinds, "U8", {RB, CT});
  hw.tile_offsets = expect(kPackedOffsets, "I64", {RB * CT + 1});
  hw.data = expect(kPackedData, "U8", {});
  hw.dtype = safetensors_dtype_to_torch(dtype);
  const uint8_t* kinds = hw.tile_kinds.data_ptr<uint8_t>();
  for (int64_t t = 0; t < RB * CT; ++t)
    PATCHLLM_CHECK(kinds[t] <= 1, FormatError, f, ": ", prefix, kPackedKinds, " has value ", int(kinds[t]),
                   " at tile ", t, " (0 dense, 1 2:4)");
  hw.layout = hybrid_layout_make(rows, cols, tr, tc, kinds);
  const int64_t* off = hw.tile_offsets.data_ptr<int64_t>();
  for (int64_t t = 0; t <= RB * CT; ++t)
    PATCHLLM_CHECK(off[t] == hw.layout.offsets[t], FormatError, f, ": ", prefix, kPackedOffsets, "[", t, "] is ",
                   off[t], ", the tile kinds give ", hw.layout.offsets[t]);
  PATCHLLM_CHECK(hw.data.numel() == hw.layout.offsets.back(), FormatError, f, ": ", prefix, kPackedData, " has ",
                 hw.data.numel(), " bytes, the tile kinds give ", hw.layout.offsets.back());
  // 2:4 metadata: every nibble one of the six ordered codes (the kernels would read garbage otherwise).
  const uint8_t* blob = hw.data.data_ptr<uint8_t>();
  const int64_t units = int64_t(tr / HYBRID_GROUP_ROWS) * (tc / HYBRID_SLAB_COLS);
  for (int64_t t = 0; t < RB * CT; ++t) {
    if (kinds[t] != HYBRID_TILE_SPARSE24) continue;
    for (int64_t u = 0; u < units; ++u) {
      const uint8_t* meta = blob + off[t] + u * HYBRID_SPARSE_UNIT_BYTES + HYBRID_SPARSE_VALUE_BYTES;
      for (int b = 0; b < 128; ++b) {
        bool ok = (kValidNibbles >> (meta[b] & 0xf)) & 1 && (kValidNibbles >> (meta[b] >> 4)) & 1;
        PATCHLLM_CHECK(ok, FormatError, f, ": ", prefix, kPackedData, ": invalid 2:4 metadata byte 0x", std::hex,
                       int(meta[b]), std::dec, " in tile ", t);
      }
    }
  }
  return hw;
}

bool checkpoint_is_packed(const Checkpoint& ckpt) {
  for (const auto& n : ckpt.names())
    if (ends_with(n, kPackedData)) return true;
  return false;
}

void checkpoint_require_dense(const Checkpoint& ckpt, const std::string& dir, const std::string& what) {
  PATCHLLM_CHECK(!checkpoint_is_packed(ckpt), InvalidArgument, dir, ": ", what,
                 " needs dense decoder weights; this is a packed hybrid model (use the base model or an "
                 "`export --format hf` directory)");
}

void model_require_dense(Model& model, const std::string& what) {
  for (auto& [name, slot] : model.linears())
    PATCHLLM_CHECK(!dynamic_cast<PackedHybridLinear*>(slot->get()), InvalidArgument, model.dir, ": ", what,
                   " needs dense decoder weights; this is a packed hybrid model (use the base model or an "
                   "`export --format hf` directory)");
}

int64_t model_add_prefill_images(Model& model) {
  std::vector<Linear*> run;  // the linears the forward calls: a current fused group instead of its parts
  for (DecoderLayer& L : model.layers) {
    if (L.qkv.current({&L.q, &L.k, &L.v}))
      run.push_back(L.qkv.linear.get());
    else
      run.insert(run.end(), {L.q.get(), L.k.get(), L.v.get()});
    if (L.gate_up.current({&L.gate, &L.up}))
      run.push_back(L.gate_up.linear.get());
    else
      run.insert(run.end(), {L.gate.get(), L.up.get()});
    run.insert(run.end(), {L.o.get(), L.down.get()});
  }
  int64_t built = 0;
  for (Linear* lin : run) {
    auto* p = dynamic_cast<PackedHybridLinear*>(lin);
    if (!p || p->hw.prefill_image.defined() || p->hw.layout.tile_rows != 128 || p->hw.layout.tile_cols != 128) continue;
    hybrid_add_prefill_image(p->hw);
    ++built;
  }
  return built;
}

double model_pack_random(Model& model, double f, uint64_t seed, c10::ScalarType dtype, int tile_rows, int tile_cols) {
  PATCHLLM_CHECK(f >= 0 && f <= 1, InvalidArgument, "2:4 tile fraction ", f, " is not in [0, 1]");
  auto slots = model.linears();
  model_require_dense(model, "packing");
  // Tile maps first, serially, so they depend on the seed only.
  torch::manual_seed(seed);
  std::vector<torch::Tensor> maps;
  int64_t sparse = 0, total = 0;
  for (auto& [name, slot] : slots) {
    const int64_t N = (*slot)->weight.size(0), K = (*slot)->weight.size(1);
    PATCHLLM_CHECK(K % 4 == 0, InvalidArgument, name, ": K = ", K, " is not a multiple of 4");
    const int64_t RB = hybrid_ceil_div(N, tile_rows), CT = hybrid_ceil_div(K, tile_cols), T = RB * CT;
    const int64_t ns = std::llround(f * double(T));
    auto flat = torch::zeros({T}, torch::kUInt8);
    flat.index_fill_(0, torch::randperm(T, torch::kLong).slice(0, 0, ns), 1);
    maps.push_back(flat.view({RB, CT}));
    sparse += ns;
    total += T;
  }
  std::vector<LinearPtr> packed(slots.size());
  at::parallel_for(0, int64_t(slots.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const Linear& lin = **slots[i].second;
      torch::Tensor w = lin.weight.to(dtype).contiguous();  // on the model's device; hybrid_pack copies to the CPU
      const int64_t N = w.size(0), K = w.size(1);
      // Magnitude 2:4 inside every group of 4 along K (used only in 2:4 tiles).
      auto idx = std::get<1>(w.abs().to(torch::kFloat32).view({N, K / 4, 4}).topk(2, -1));
      auto keep = torch::zeros({N, K / 4, 4}, idx.options().dtype(torch::kBool)).scatter_(-1, idx, true).view({N, K});
      HybridWeight hw = hybrid_pack(w, maps[i], keep, tile_rows, tile_cols).to(model.device);
      packed[i] = std::make_shared<PackedHybridLinear>(std::move(hw), lin.bias);
    }
  });
  for (size_t i = 0; i < slots.size(); ++i) *slots[i].second = packed[i];
  return total ? double(sparse) / double(total) : 0.0;
}

}  // namespace patchllm
