#include "ops/mask_fused.h"

#include <ATen/Parallel.h>

#include "core/error.h"
#include "ops/philox.h"

#if defined(PATCHLLM_HAVE_CUDA_KERNELS) && defined(PATCHLLM_TORCH_HAS_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ops/mask_kernels.h"
#define PATCHLLM_MASK_FUSED 1
#endif

namespace patchllm {

bool mask_fused_available(const torch::Tensor& w) {
#ifdef PATCHLLM_MASK_FUSED
  return w.defined() && w.is_cuda();
#else
  (void)w;
  return false;
#endif
}

torch::Tensor joint_noise_uniform(int64_t groups, uint64_t seed) {
  auto u = torch::empty({groups, 6}, torch::kFloat32);
  float* p = u.data_ptr<float>();
  at::parallel_for(0, groups * 6, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = philox_uniform(seed, uint64_t(i));
  });
  return u;
}

#ifdef PATCHLLM_MASK_FUSED
namespace {

int mask_dtype(const torch::Tensor& w) {
  switch (w.scalar_type()) {
    case torch::kFloat32: return MASK_F32;
    case torch::kBFloat16: return MASK_BF16;
    case torch::kHalf: return MASK_F16;
    default: PATCHLLM_CHECK(false, InvalidArgument, "fused mask kernels: unsupported weight dtype ", w.scalar_type());
  }
  return MASK_BF16;
}

MaskKernelArgs make_args(const torch::Tensor& w, const FusedMaskSpec& s) {
  PATCHLLM_CHECK(w.is_cuda() && w.dim() == 2 && w.is_contiguous(), InvalidArgument,
                 "fused mask kernels: need a contiguous 2-D CUDA weight, got ", w.sizes(), " on ", w.device());
  PATCHLLM_CHECK(w.size(1) % 4 == 0 && s.tile_c % 4 == 0 && s.tile_r > 0, InvalidArgument,
                 "fused mask kernels: input width ", w.size(1), " and tile width ", s.tile_c,
                 " must be multiples of 4");
  MaskKernelArgs a;
  a.dtype = mask_dtype(w);
  a.rows = w.size(0);
  a.cols = w.size(1);
  a.tile_r = s.tile_r;
  a.tile_c = s.tile_c;
  a.w = w.data_ptr();
  a.kappa = float(s.kappa);
  a.tau = float(s.tau);
  a.hard = s.hard;
  a.seed = s.seed;
  a.stream = c10::cuda::getCurrentCUDAStream(w.device().index()).stream();
  return a;
}
int64_t grid_r(const MaskKernelArgs& a) { return (a.rows + a.tile_r - 1) / a.tile_r; }
int64_t grid_c(const MaskKernelArgs& a) { return (a.cols + a.tile_c - 1) / a.tile_c; }

const float* tile_values(const torch::Tensor& t, const MaskKernelArgs& a, const torch::Tensor& w,
                         torch::Tensor& keep_alive) {
  if (!t.defined()) return nullptr;
  PATCHLLM_CHECK(t.numel() == grid_r(a) * grid_c(a), InvalidArgument, "fused mask kernels: ", t.numel(),
                 " tile values for a ", grid_r(a), "x", grid_c(a), " tile grid");
  keep_alive = t.detach().to(w.device(), torch::kFloat32).contiguous();
  return keep_alive.data_ptr<float>();
}
torch::Tensor partials(const MaskKernelArgs& a, const torch::Tensor& w) {
  return torch::empty({grid_r(a) * grid_c(a) * mask_kernel_splits(a)},
                      torch::TensorOptions().dtype(torch::kFloat32).device(w.device()));
}
void check(int err, const char* what) {
  if (err) throw CudaError(str(__FILE__, ": ", what, ": CUDA error ", err, " (", mask_kernel_error_string(err), ")"));
}
const float* logits(const torch::Tensor& phi, const MaskKernelArgs& a, const torch::Tensor& w) {
  PATCHLLM_CHECK(phi.scalar_type() == torch::kFloat32 && phi.is_contiguous() && phi.numel() == a.rows * a.cols / 4 * 6 &&
                     phi.device() == w.device(),
                 InvalidArgument, "fused mask kernels: 2:4 logits must be contiguous fp32 [", a.rows * a.cols / 4,
                 ", 6] on the weight's device");
  return phi.data_ptr<float>();
}

}  // namespace
#endif

torch::Tensor tile_weff_fused(const torch::Tensor& w, const torch::Tensor& keep, const torch::Tensor& t,
                              const FusedMaskSpec& s) {
#ifdef PATCHLLM_MASK_FUSED
  c10::cuda::CUDAGuard guard(w.device());
  MaskKernelArgs a = make_args(w, s);
  PATCHLLM_CHECK(keep.scalar_type() == torch::kBool && keep.sizes() == w.sizes() && keep.is_contiguous(),
                 InvalidArgument, "tile_weff_fused: keep must be a contiguous bool tensor of the weight's shape");
  torch::Tensor tv;
  a.t = tile_values(t, a, w, tv);
  PATCHLLM_CHECK(a.t, InvalidArgument, "tile_weff_fused: tile values missing");
  a.keep = reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>());
  auto out = torch::empty_like(w);
  a.weff = out.data_ptr();
  check(tile_mask_forward(a), "tile_weff_fused");
  return out;
#else
  PATCHLLM_CHECK(false, InvalidArgument, "tile_weff_fused: built without CUDA kernels");
  return {};
#endif
}

torch::Tensor tile_weff_grad_fused(const torch::Tensor& gw, const torch::Tensor& w, const torch::Tensor& keep,
                                   const FusedMaskSpec& s) {
#ifdef PATCHLLM_MASK_FUSED
  c10::cuda::CUDAGuard guard(w.device());
  MaskKernelArgs a = make_args(w, s);
  auto g = gw.to(w.scalar_type()).contiguous();
  PATCHLLM_CHECK(g.sizes() == w.sizes() && keep.scalar_type() == torch::kBool && keep.sizes() == w.sizes() &&
                     keep.is_contiguous(),
                 InvalidArgument, "tile_weff_grad_fused: gradient and keep mask must have the weight's shape");
  a.gw = g.data_ptr();
  a.keep = reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>());
  auto part = partials(a, w);
  a.partial = part.data_ptr<float>();
  check(tile_mask_backward(a), "tile_weff_grad_fused");
  return part.view({grid_r(a), grid_c(a), -1}).sum(-1);
#else
  PATCHLLM_CHECK(false, InvalidArgument, "tile_weff_grad_fused: built without CUDA kernels");
  return {};
#endif
}

torch::Tensor joint_weff_fused(const torch::Tensor& w, const torch::Tensor& phi, const torch::Tensor& t,
                               const FusedMaskSpec& s, torch::Tensor* norm_sq) {
#ifdef PATCHLLM_MASK_FUSED
  c10::cuda::CUDAGuard guard(w.device());
  MaskKernelArgs a = make_args(w, s);
  auto ph = phi.detach().contiguous();
  a.phi = logits(ph, a, w);
  torch::Tensor tv, part;
  a.t = tile_values(t, a, w, tv);
  if (norm_sq) {
    part = partials(a, w);
    a.partial = part.data_ptr<float>();
  }
  auto out = torch::empty_like(w);
  a.weff = out.data_ptr();
  check(joint_mask_forward(a), "joint_weff_fused");
  if (norm_sq) *norm_sq = part.sum();
  return out;
#else
  PATCHLLM_CHECK(false, InvalidArgument, "joint_weff_fused: built without CUDA kernels");
  return {};
#endif
}

std::pair<torch::Tensor, torch::Tensor> joint_weff_grad_fused(const torch::Tensor& gw, const torch::Tensor& w,
                                                              const torch::Tensor& phi, const torch::Tensor& t,
                                                              const FusedMaskSpec& s,
                                                              const torch::Tensor& norm_coef) {
#ifdef PATCHLLM_MASK_FUSED
  c10::cuda::CUDAGuard guard(w.device());
  MaskKernelArgs a = make_args(w, s);
  auto ph = phi.detach().contiguous();
  a.phi = logits(ph, a, w);
  auto g = gw.to(w.scalar_type()).contiguous();
  PATCHLLM_CHECK(g.sizes() == w.sizes(), InvalidArgument, "joint_weff_grad_fused: gradient shape ", g.sizes(),
                 " != weight shape ", w.sizes());
  a.gw = g.data_ptr();
  torch::Tensor tv, part, coef;
  a.t = tile_values(t, a, w, tv);
  if (a.t) {
    part = partials(a, w);
    a.partial = part.data_ptr<float>();
  }
  if (norm_coef.defined()) {
    coef = norm_coef.detach().to(w.device(), torch::kFloat32).reshape({1}).contiguous();
    a.norm_coef = coef.data_ptr<float>();
  }
  auto dphi = torch::empty_like(ph);
  a.dphi = dphi.data_ptr<float>();
  check(joint_mask_backward(a), "joint_weff_grad_fused");
  torch::Tensor dt = a.t ? part.view({grid_r(a), grid_c(a), -1}).sum(-1) : torch::Tensor();
  return {dphi, dt};
#else
  PATCHLLM_CHECK(false, InvalidArgument, "joint_weff_grad_fused: built without CUDA kernels");
  return {};
#endif
}

}  // namespace patchllm
