// Hybrid linear front: packing/unpacking on the CPU and dispatch by device (CPU reference, CUDA kernels).
// x: [..., K] bf16/fp16, W: [N, K] packed hybrid (128×128 tiles for the kernels) -> y: [..., N].
#include "ops/hybrid_linear.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "ops/hybrid_gemm.h"

// Debian's CPU LibTorch ships c10/cuda headers that cannot compile, so CMake says whether LibTorch has CUDA.
#if defined(PATCHLLM_HAVE_CUDA_KERNELS) && defined(PATCHLLM_TORCH_HAS_CUDA)
#include <c10/cuda/CUDAStream.h>
#define PATCHLLM_HAVE_TORCH_CUDA 1
#endif

namespace patchllm {

namespace {

bool is_16bit_float(torch::ScalarType t) { return t == torch::kBFloat16 || t == torch::kHalf; }

HybridKernelOptions& kernel_options() {
  static HybridKernelOptions o;
  return o;
}

}  // namespace

void set_hybrid_kernel_options(const HybridKernelOptions& o) { kernel_options() = o; }
HybridKernelOptions hybrid_kernel_options() { return kernel_options(); }

HybridKernelOptions parse_hybrid_kernel_options(const std::string& s) {
  HybridKernelOptions o;
  o.pdl = false;  // the string names every option that is on; the default (pdl) is "pdl"
  if (s == "plain") return o;
  // A '+'-joined set of pdl, cluster or workspace, rows, batched, onebatch and sharex, each at most once, any order.
  bool bad = s.empty();
  for (size_t p = 0; !bad && p <= s.size();) {
    const size_t q = std::min(s.find('+', p), s.size());
    const std::string t = s.substr(p, q - p);
    bool* flag = t == "pdl"         ? &o.pdl
                 : t == "cluster"   ? &o.cluster_reduction
                 : t == "workspace" ? &o.workspace_reduction
                 : t == "rows"      ? &o.row_split
                 : t == "batched"   ? &o.prefill_batched
                 : t == "onebatch"  ? &o.one_batch
                 : t == "sharex"    ? &o.prefill_sharex
                                    : nullptr;
    bad = flag == nullptr || *flag;
    if (!bad) *flag = true;
    p = q + 1;
  }
  PATCHLLM_CHECK(!bad && !(o.cluster_reduction && o.workspace_reduction), InvalidArgument, "hybrid kernel options '", s,
                 "': expected plain, or pdl, cluster or workspace, rows, batched, onebatch and sharex joined by '+' "
                 "(e.g. pdl+rows)");
  return o;
}

std::string to_string(const HybridKernelOptions& o) {
  std::string s;
  for (auto [on, name] : {std::pair<bool, const char*>{o.pdl, "pdl"},
                          {o.cluster_reduction, "cluster"},
                          {o.workspace_reduction, "workspace"},
                          {o.row_split, "rows"},
                          {o.prefill_batched, "batched"},
                          {o.one_batch, "onebatch"},
                          {o.prefill_sharex, "sharex"}})
    if (on) s += (s.empty() ? "" : "+") + std::string(name);
  return s.empty() ? "plain" : s;
}

double HybridWeight::sparse_tile_fraction() const {
  if (layout.kinds.empty()) return 0.0;
  int64_t n = 0;
  for (uint8_t k : layout.kinds) n += (k == HYBRID_TILE_SPARSE24);
  return double(n) / double(layout.kinds.size());
}

HybridWeight HybridWeight::to(torch::Device device) const {
  HybridWeight out = *this;
  out.data = data.to(device);
  out.tile_kinds = tile_kinds.to(device);
  out.tile_offsets = tile_offsets.to(device);
  if (prefill_image.defined()) out.prefill_image = prefill_image.to(device);
  if (prefill_order.defined()) out.prefill_order = prefill_order.to(device);
  out.workspace = std::make_shared<torch::Tensor>();
  return out;
}

// hw's blob as a contiguous CPU tensor, after checking it has the bytes its layout needs (`who` names the caller).
static torch::Tensor cpu_blob(const HybridWeight& hw, const char* who) {
  const HybridLayout& L = hw.layout;
  PATCHLLM_CHECK(hw.data.defined() && hw.data.numel() == (L.offsets.empty() ? 0 : L.offsets.back()), FormatError,
                 who, ": packed data has ", hw.data.defined() ? hw.data.numel() : 0, " bytes but the layout needs ",
                 L.offsets.empty() ? 0 : L.offsets.back());
  return hw.data.to(torch::kCPU).contiguous();
}

void hybrid_add_prefill_image(HybridWeight& hw) {
  const HybridLayout& L = hw.layout;
  PATCHLLM_CHECK(L.tile_rows == 128 && L.tile_cols == 128, InvalidArgument,
                 "hybrid_add_prefill_image: needs 128x128 tiles, weight has ", L.tile_rows, "x", L.tile_cols);
  torch::Tensor blob = cpu_blob(hw, "hybrid_add_prefill_image");
  torch::Tensor image = torch::empty_like(blob);
  hybrid_prefill_image_raw(blob.data_ptr<uint8_t>(), L, image.data_ptr<uint8_t>());
  hw.prefill_image = image.to(hw.data.device());
  torch::Tensor order = torch::empty({hybrid_prefill_order_words(L)}, torch::kInt32);
  hybrid_prefill_order_raw(L, reinterpret_cast<uint32_t*>(order.data_ptr<int32_t>()));
  hw.prefill_order = order.to(hw.data.device());
}

HybridWeight hybrid_pack(const torch::Tensor& weight, const torch::Tensor& tile_is_sparse,
                         const torch::Tensor& keep_mask, int tile_rows, int tile_cols) {
  PATCHLLM_CHECK(weight.defined() && weight.dim() == 2, InvalidArgument, "hybrid_pack: weight must be 2-D [N, K]");
  PATCHLLM_CHECK(is_16bit_float(weight.scalar_type()), InvalidArgument,
                 "hybrid_pack: weight dtype must be bf16 or fp16, got ", weight.scalar_type());
  const int64_t N = weight.size(0), K = weight.size(1);
  std::string geo = hybrid_check_geometry(N, K, tile_rows, tile_cols);
  PATCHLLM_CHECK(geo.empty(), InvalidArgument, "hybrid_pack: ", geo);
  const int64_t RB = hybrid_ceil_div(N, tile_rows), CT = hybrid_ceil_div(K, tile_cols);
  PATCHLLM_CHECK(tile_is_sparse.defined() && tile_is_sparse.dim() == 2 && tile_is_sparse.size(0) == RB &&
                     tile_is_sparse.size(1) == CT,
                 InvalidArgument, "hybrid_pack: tile map must be [", RB, ", ", CT, "] for weight [", N, ", ", K,
                 "] and tiles ", tile_rows, "x", tile_cols);
  PATCHLLM_CHECK(keep_mask.defined() && keep_mask.dim() == 2 && keep_mask.size(0) == N && keep_mask.size(1) == K,
                 InvalidArgument, "hybrid_pack: keep mask must be [", N, ", ", K, "]");
  torch::Tensor tmap = tile_is_sparse.to(torch::kCPU, torch::kUInt8).contiguous();
  {
    auto mx = tmap.max().item<int>();
    PATCHLLM_CHECK(mx <= 1, InvalidArgument, "hybrid_pack: tile map values must be 0 or 1");
  }
  torch::Tensor w = weight.to(torch::kCPU).contiguous();
  torch::Tensor keep = keep_mask.to(torch::kCPU).ne(0).to(torch::kUInt8).contiguous();

  HybridWeight hw;
  hw.dtype = weight.scalar_type();
  hw.layout = hybrid_layout_make(N, K, tile_rows, tile_cols, tmap.data_ptr<uint8_t>());
  hw.data = torch::empty({hw.layout.offsets.back()}, torch::kUInt8);
  // Row blocks in parallel (a 7B model is ~90 s serially); the first error in row-block order is reported, as the
  // serial loop would.
  const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  const uint8_t* kp = keep.data_ptr<uint8_t>();
  uint8_t* out = hw.data.data_ptr<uint8_t>();
  std::vector<std::string> errs(size_t(hw.layout.row_blocks));
  at::parallel_for(0, hw.layout.row_blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t rb = b; rb < e; ++rb) errs[size_t(rb)] = hybrid_pack_raw(wp, kp, hw.layout, out, rb, rb + 1);
  });
  for (const std::string& err : errs) PATCHLLM_CHECK(err.empty(), InvalidArgument, "hybrid_pack: ", err);
  hw.tile_kinds = tmap.clone().reshape({RB, CT});
  hw.tile_offsets = torch::empty({RB * CT + 1}, torch::kInt64);
  std::memcpy(hw.tile_offsets.data_ptr<int64_t>(), hw.layout.offsets.data(), hw.layout.offsets.size() * 8);
  return hw;
}

torch::Tensor hybrid_unpack(const HybridWeight& hw) {
  const HybridLayout& L = hw.layout;
  torch::Tensor blob = cpu_blob(hw, "hybrid_unpack");
  torch::Tensor w = torch::empty({L.rows, L.cols}, torch::TensorOptions().dtype(hw.dtype));
  hybrid_unpack_raw(blob.data_ptr<uint8_t>(), L, reinterpret_cast<uint16_t*>(w.data_ptr()));
  return w;
}

torch::Tensor hybrid_linear(const torch::Tensor& x, const HybridWeight& hw) {
  PATCHLLM_CHECK(x.defined() && x.dim() >= 1, InvalidArgument, "hybrid_linear: x must have at least 1 dimension");
  const int64_t K = hw.in_features();
  [[maybe_unused]] const int64_t N = hw.out_features();
  PATCHLLM_CHECK(x.size(-1) == K, InvalidArgument, "hybrid_linear: x has K=", x.size(-1), " but the weight has K=", K);
  PATCHLLM_CHECK(x.scalar_type() == hw.dtype, InvalidArgument, "hybrid_linear: x dtype ", x.scalar_type(),
                 " differs from the weight dtype ", hw.dtype);
  PATCHLLM_CHECK(x.device() == hw.device(), InvalidArgument, "hybrid_linear: x is on ", x.device(),
                 " but the weight is on ", hw.device());
  if (x.device().is_cpu()) return hybrid_linear_ref(x, hw);
  PATCHLLM_CHECK(x.device().is_cuda(), InvalidArgument, "hybrid_linear: unsupported device ", x.device());
#ifndef PATCHLLM_HAVE_CUDA_KERNELS
  PATCHLLM_CHECK(false, InvalidArgument, "hybrid_linear: patchllm was built without CUDA kernels");
  return {};
#else
  PATCHLLM_CHECK(hw.layout.tile_rows == 128 && hw.layout.tile_cols == 128, InvalidArgument,
                 "hybrid_linear: CUDA kernels need 128x128 tiles, weight has ", hw.layout.tile_rows, "x",
                 hw.layout.tile_cols);
  PATCHLLM_CHECK(K % 8 == 0, InvalidArgument, "hybrid_linear: CUDA kernels need K % 8 == 0, got K=", K);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  torch::Tensor x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  torch::Tensor y = torch::empty({M, N}, x.options());
  if (M == 0) return y.reshape(out_shape);
  size_t need = hybrid_gemm_workspace_bytes(M, N);
  torch::Tensor& ws = *hw.workspace;
  if (!ws.defined() || size_t(ws.numel()) < need)  // zero once: the kernel leaves its counters at zero
    ws = torch::zeros({int64_t(need)}, torch::TensorOptions().dtype(torch::kUInt8).device(x.device()));
  HybridGemmArgs a;
  a.x = x2.data_ptr();
  a.y = y.data_ptr();
  a.M = M;
  a.N = N;
  a.K = K;
  a.blob = hw.data.data_ptr<uint8_t>();
  a.kinds = hw.tile_kinds.data_ptr<uint8_t>();
  a.offsets = hw.tile_offsets.data_ptr<int64_t>();
  a.tile_rows = hw.layout.tile_rows;
  a.tile_cols = hw.layout.tile_cols;
  a.bf16 = hw.dtype == torch::kBFloat16;
  a.workspace = ws.data_ptr();
  a.workspace_bytes = size_t(ws.numel());
  const HybridKernelOptions& ko = kernel_options();
  a.pdl = ko.pdl;  // safe in stream order: x, y and ws only after the previous kernel; nothing writes hw's tensors
  a.decode_reduction = ko.cluster_reduction ? 1 : ko.workspace_reduction ? 0 : 2;
  a.decode_warps = ko.row_split ? 4 : 0;
  a.prefill_batched = ko.prefill_batched;
  if (ko.prefill_sharex) {
    a.prefill_schedule = 3;
    if (hw.prefill_image.defined()) a.prefill_image = hw.prefill_image.data_ptr<uint8_t>();
    // no dense tile: v7's stages sized for 2:4 slabs (one memchr over the host kinds, at decode sizes too)
    const std::vector<uint8_t>& kinds = hw.layout.kinds;
    a.prefill_all_sparse = std::memchr(kinds.data(), HYBRID_TILE_DENSE, kinds.size()) == nullptr;
    // else v8 (each row-block pair's all-2:4 slabs first, in five stages): 1.01–1.07× v7 in the median over seven
    // shapes at each M in 2048 … 8192 and f in 0 … 0.9 (single cases 0.85–1.26; H100, session 32)
    if (a.prefill_image && hw.prefill_order.defined())
      a.prefill_order = reinterpret_cast<const uint32_t*>(hw.prefill_order.data_ptr<int32_t>());
  }
  if (ko.one_batch) a.decode_variant = 2;
#ifdef PATCHLLM_HAVE_TORCH_CUDA
  a.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
#endif
  HybridLaunchResult r = hybrid_gemm_launch(a);
  if (r.status == HYBRID_ERR_CUDA)
    throw CudaError(str(__FILE__, ":", __LINE__, ": hybrid_linear: CUDA error ", r.cuda_error, " (",
                        hybrid_cuda_error_string(r.cuda_error), ")"));
  PATCHLLM_CHECK(r.status == HYBRID_OK, InvalidArgument, __FILE__, ":", __LINE__,
                 ": hybrid_linear: ", hybrid_status_string(r.status));
  return y.reshape(out_shape);
#endif
}

}  // namespace patchllm
