// Fused projections (issue 6): q|k|v and gate|up of a decoder layer as one linear, so one GEMM (dense) or one hybrid
// kernel launch (packed) serves them. x: [..., K] -> y: [..., Nq + Nk + Nv] (or [..., 2 I]), split with narrow.
// Dense: the weights concatenated along N; packed: the tile blobs, kind rows and offsets (shifted by the blob bytes
// before them) concatenated, which is a valid packed weight because no part but the last has a ragged row block.
// Either way the parts' weights/blobs are replaced by views into the fused tensor: no memory is duplicated, and an
// in-place change of a part's weight is seen by the fused linear.
#include <typeinfo>

#include "core/log.h"
#include "model/model.h"
#include "model/packed_linear.h"

namespace patchllm {

namespace {

// The weight tensor whose identity says a part is unchanged: its dense weight or its packed blob.
const torch::Tensor& part_weight(const Linear& l) {
  if (const auto* p = dynamic_cast<const PackedHybridLinear*>(&l)) return p->hw.data;
  return l.weight;
}

// Biases of the parts concatenated (zeros for a part without one), or undefined when no part has one. Every part's
// own bias becomes a view into it. False (nothing changed) when the biases cannot be concatenated.
bool fuse_biases(const std::vector<Linear*>& parts, torch::Tensor& fused) {
  torch::Tensor ref;
  for (Linear* p : parts)
    if (p->bias.defined()) ref = p->bias;
  if (!ref.defined()) return true;
  std::vector<torch::Tensor> bs;
  for (Linear* p : parts) {
    if (p->bias.defined()) {
      if (p->bias.dim() != 1 || p->bias.size(0) != p->out_features() || p->bias.scalar_type() != ref.scalar_type() ||
          p->bias.device() != ref.device())
        return false;
      bs.push_back(p->bias);
    } else {
      bs.push_back(torch::zeros({p->out_features()}, ref.options()));
    }
  }
  fused = torch::cat(bs, 0);
  int64_t off = 0;
  for (Linear* p : parts) {
    if (p->bias.defined()) p->bias = fused.narrow(0, off, p->out_features());
    off += p->out_features();
  }
  return true;
}

LinearPtr fuse_dense(const std::vector<Linear*>& parts) {
  const torch::Tensor& w0 = parts[0]->weight;
  std::vector<torch::Tensor> ws;
  for (Linear* p : parts) {
    const torch::Tensor& w = p->weight;
    if (typeid(*p) != typeid(Linear) || !w.defined() || w.dim() != 2 || w.size(1) != w0.size(1) ||
        w.scalar_type() != w0.scalar_type() || w.device() != w0.device())
      return nullptr;
    ws.push_back(w);
  }
  torch::Tensor bias;
  if (!fuse_biases(parts, bias)) return nullptr;
  torch::Tensor w = torch::cat(ws, 0);  // [sum N, K], contiguous
  int64_t off = 0;
  for (Linear* p : parts) {
    const int64_t n = p->weight.size(0);
    p->weight = w.narrow(0, off, n);
    off += n;
  }
  return std::make_shared<Linear>(w, bias);
}

LinearPtr fuse_packed(const std::vector<Linear*>& parts) {
  std::vector<PackedHybridLinear*> ps;
  for (Linear* p : parts) {
    if (typeid(*p) != typeid(PackedHybridLinear)) return nullptr;
    ps.push_back(static_cast<PackedHybridLinear*>(p));
  }
  const HybridWeight& h0 = ps[0]->hw;
  const HybridLayout& L0 = h0.layout;
  for (size_t i = 0; i < ps.size(); ++i) {
    const HybridWeight& h = ps[i]->hw;
    const HybridLayout& L = h.layout;
    const bool last = i + 1 == ps.size();
    if (h.dtype != h0.dtype || h.version != h0.version || h.device() != h0.device() || L.cols != L0.cols ||
        L.tile_rows != L0.tile_rows || L.tile_cols != L0.tile_cols || L.col_tiles != L0.col_tiles ||
        (!last && L.rows % L.tile_rows != 0) || !h.data.defined() || h.data.dim() != 1 ||
        h.data.numel() != L.offsets.back() || !h.tile_kinds.defined() || h.tile_kinds.numel() != L.row_blocks * L.col_tiles)
      return nullptr;
  }
  HybridWeight f;
  f.dtype = h0.dtype;
  f.version = h0.version;
  HybridLayout& F = f.layout;
  F.cols = L0.cols;
  F.tile_rows = L0.tile_rows;
  F.tile_cols = L0.tile_cols;
  F.col_tiles = L0.col_tiles;
  std::vector<torch::Tensor> blobs, kinds;
  std::vector<int64_t> starts;
  int64_t bytes = 0;
  for (PackedHybridLinear* p : ps) {
    const HybridLayout& L = p->hw.layout;
    F.rows += L.rows;
    F.row_blocks += L.row_blocks;
    F.kinds.insert(F.kinds.end(), L.kinds.begin(), L.kinds.end());
    for (size_t t = 0; t + 1 < L.offsets.size(); ++t) F.offsets.push_back(bytes + L.offsets[t]);
    starts.push_back(bytes);
    bytes += L.offsets.back();
    blobs.push_back(p->hw.data);
    kinds.push_back(p->hw.tile_kinds.reshape({L.row_blocks, L.col_tiles}));
  }
  F.offsets.push_back(bytes);
  f.data = torch::cat(blobs, 0);
  // The kernels read 16-byte vectors from each tile blob: every part's start must stay aligned in the fused blob.
  const auto base = reinterpret_cast<uintptr_t>(f.data.data_ptr());
  for (int64_t s : starts)
    if ((base + uintptr_t(s)) % 16 != 0) return nullptr;
  for (int64_t o : F.offsets)
    if (o % 16 != 0) return nullptr;
  f.tile_kinds = torch::cat(kinds, 0).to(h0.tile_kinds.scalar_type());
  f.tile_offsets = torch::tensor(F.offsets, torch::kInt64).to(h0.tile_offsets.device());
  torch::Tensor bias;
  if (!fuse_biases(parts, bias)) return nullptr;
  for (size_t i = 0; i < ps.size(); ++i) ps[i]->hw.data = f.data.narrow(0, starts[i], ps[i]->hw.data.numel());
  return std::make_shared<PackedHybridLinear>(std::move(f), bias);
}

// Fuses the parts held by slots into f, or leaves f empty when they cannot be fused.
bool fuse_group(FusedLinear& f, const std::vector<LinearPtr*>& slots) {
  std::vector<Linear*> parts;
  for (LinearPtr* s : slots) {
    if (!*s) return false;
    parts.push_back(s->get());
  }
  f = FusedLinear{};
  LinearPtr fused = dynamic_cast<PackedHybridLinear*>(parts[0]) ? fuse_packed(parts) : fuse_dense(parts);
  if (!fused) return false;
  f.linear = fused;
  for (Linear* p : parts) {
    f.parts.push_back(p);
    f.tensors.push_back(part_weight(*p));
    f.tensors.push_back(p->bias);
    f.sizes.push_back(p->out_features());
  }
  return true;
}

}  // namespace

bool FusedLinear::current(std::initializer_list<const LinearPtr*> slots) const {
  if (!linear || slots.size() != parts.size()) return false;
  size_t i = 0;
  for (const LinearPtr* s : slots) {
    const Linear* l = s->get();
    if (l != parts[i] || !part_weight(*l).is_same(tensors[2 * i]) || !l->bias.is_same(tensors[2 * i + 1]))
      return false;
    ++i;
  }
  return true;
}

std::vector<torch::Tensor> FusedLinear::forward(const torch::Tensor& x) const {
  torch::Tensor y = linear->forward(x);
  std::vector<torch::Tensor> out;
  int64_t off = 0;
  for (int64_t n : sizes) {
    out.push_back(y.narrow(-1, off, n));
    off += n;
  }
  return out;
}

int model_fuse_projections(Model& model) {
  torch::NoGradGuard ng;
  int fused = 0, groups = 0;
  for (DecoderLayer& L : model.layers) {
    groups += 2;
    if (L.qkv.current({&L.q, &L.k, &L.v}) || fuse_group(L.qkv, {&L.q, &L.k, &L.v})) ++fused;
    if (L.gate_up.current({&L.gate, &L.up}) || fuse_group(L.gate_up, {&L.gate, &L.up})) ++fused;
  }
  log_debug("fused projections: ", fused, " of ", groups, " groups (q|k|v, gate|up)");
  return fused;
}

}  // namespace patchllm
