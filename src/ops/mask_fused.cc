#include "ops/mask_fused.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <memory>

#include "core/error.h"
#include "ops/adamw_state.h"
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
  // The kernels load 4 weights at once (8 bytes in bf16/fp16, 16 in fp32).
  PATCHLLM_CHECK(reinterpret_cast<uintptr_t>(w.data_ptr()) % (a.dtype == MASK_F32 ? 16 : 8) == 0, InvalidArgument,
                 "fused mask kernels: weight data not aligned to 4 elements");
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
// t as the kernels read it (fp32, contiguous, on the weight's device), held in `held` for the launch; null if none.
const float* tile_values(const torch::Tensor& t, const MaskKernelArgs& a, const torch::Tensor& w,
                         torch::Tensor& held) {
  if (!t.defined()) return nullptr;
  PATCHLLM_CHECK(t.numel() == mask_grid_r(a) * mask_grid_c(a), InvalidArgument, "fused mask kernels: ", t.numel(),
                 " tile values for a ", mask_grid_r(a), "x", mask_grid_c(a), " tile grid");
  held = t.detach().to(w.device(), torch::kFloat32).contiguous();
  return held.data_ptr<float>();
}
const uint8_t* keep_mask(const torch::Tensor& keep, const torch::Tensor& w, const char* what) {
  PATCHLLM_CHECK(keep.scalar_type() == torch::kBool && keep.sizes() == w.sizes() && keep.is_contiguous(),
                 InvalidArgument, what, ": keep must be a contiguous bool tensor of the weight's shape");
  return reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>());
}
// The kernels' per-block partial sums, and their sum per tile [grid_r, grid_c] in a fixed order.
torch::Tensor partials(const MaskKernelArgs& a, const torch::Tensor& w) {
  return torch::empty({mask_grid_r(a) * mask_grid_c(a) * mask_kernel_splits(a)},
                      torch::TensorOptions().dtype(torch::kFloat32).device(w.device()));
}
torch::Tensor per_tile(const torch::Tensor& partial, const MaskKernelArgs& a) {
  return partial.view({mask_grid_r(a), mask_grid_c(a), -1}).sum(-1);
}
void check(int err, const char* what) {
  if (err) throw CudaError(str(__FILE__, ": ", what, ": CUDA error ", err, " (", mask_kernel_error_string(err), ")"));
}
const float* logits(const torch::Tensor& phi, const MaskKernelArgs& a, const torch::Tensor& w) {
  PATCHLLM_CHECK(phi.scalar_type() == torch::kFloat32 && phi.is_contiguous() &&
                     phi.numel() == a.rows * a.cols / 4 * 6 && phi.device() == w.device(),
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
  a.keep = keep_mask(keep, w, "tile_weff_fused");
  torch::Tensor tv;
  a.t = tile_values(t, a, w, tv);
  PATCHLLM_CHECK(a.t, InvalidArgument, "tile_weff_fused: tile values missing");
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
                                   const FusedMaskSpec& s, const torch::Tensor& t, torch::Tensor* weff) {
#ifdef PATCHLLM_MASK_FUSED
  c10::cuda::CUDAGuard guard(w.device());
  MaskKernelArgs a = make_args(w, s);
  auto g = gw.to(w.scalar_type()).contiguous();
  PATCHLLM_CHECK(g.sizes() == w.sizes(), InvalidArgument, "tile_weff_grad_fused: gradient shape ", g.sizes(),
                 " != weight shape ", w.sizes());
  a.gw = g.data_ptr();
  a.keep = keep_mask(keep, w, "tile_weff_grad_fused");
  auto part = partials(a, w);
  a.partial = part.data_ptr<float>();
  torch::Tensor tv, out;
  a.t = tile_values(t, a, w, tv);
  if (weff) {
    PATCHLLM_CHECK(a.t, InvalidArgument, "tile_weff_grad_fused: W_eff asked for without tile values");
    out = torch::empty_like(w);
    a.weff = out.data_ptr();
  }
  check(tile_mask_backward(a), "tile_weff_grad_fused");
  if (weff) *weff = out;
  return per_tile(part, a);
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
                                                              const torch::Tensor& norm_coef, torch::Tensor* weff) {
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
  torch::Tensor out;
  if (weff) {
    out = torch::empty_like(w);
    a.weff = out.data_ptr();
  }
  check(joint_mask_backward(a), "joint_weff_grad_fused");
  if (weff) *weff = out;
  torch::Tensor dt = a.t ? per_tile(part, a) : torch::Tensor();
  return {dphi, dt};
#else
  PATCHLLM_CHECK(false, InvalidArgument, "joint_weff_grad_fused: built without CUDA kernels");
  return {};
#endif
}

bool adamw_step_fused(torch::optim::AdamW& opt, double max_norm) {
#ifdef PATCHLLM_MASK_FUSED
  std::vector<torch::Tensor> ps;
  for (auto& group : opt.param_groups()) {
    if (static_cast<torch::optim::AdamWOptions&>(group.options()).amsgrad()) return false;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (!p.is_cuda() || p.scalar_type() != torch::kFloat32 || !p.is_contiguous() || !p.grad().is_contiguous() ||
          p.grad().scalar_type() != torch::kFloat32 || p.grad().is_sparse())
        return false;
      ps.push_back(p);
    }
  }
  if (ps.empty()) return true;
  c10::cuda::CUDAGuard guard(ps[0].device());
  torch::NoGradGuard ng;
  // clip_grad_norm_: coef = max_norm / (‖g‖ + 1e-6), applied when below 1; kept on the device.
  std::vector<torch::Tensor> grads;
  for (auto& p : ps) grads.push_back(p.grad());
  auto norms = at::_foreach_norm(grads);  // multi-tensor kernels: a few launches, not one per parameter
  auto scale = (max_norm / (torch::stack(norms).norm(2) + 1e-6)).clamp_max(1.0).to(torch::kFloat32).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream(ps[0].device().index()).stream();
  for (auto& group : opt.param_groups()) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto* st = adamw_state(opt, p);
      if (!st) {  // as AdamW::step: zero moments at step 0
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, at::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, at::MemoryFormat::Preserve));
        st = set_adamw_state(opt, p, std::move(fresh));
      }
      st->step(st->step() + 1);
      AdamWArgs a;
      a.p = p.data_ptr<float>();
      a.g = p.grad().data_ptr<float>();
      a.m = st->exp_avg().data_ptr<float>();
      a.v = st->exp_avg_sq().data_ptr<float>();
      a.n = p.numel();
      a.grad_scale = scale.data_ptr<float>();
      a.lr = float(o.lr());
      a.beta1 = float(std::get<0>(o.betas()));
      a.beta2 = float(std::get<1>(o.betas()));
      a.eps = float(o.eps());
      a.weight_decay = float(o.weight_decay());
      a.bias_correction1 = float(1 - std::pow(std::get<0>(o.betas()), double(st->step())));
      a.bias_correction2 = float(1 - std::pow(std::get<1>(o.betas()), double(st->step())));
      a.stream = stream;
      check(adamw_fused(a), "adamw_step_fused");
    }
  }
  return true;
#else
  (void)opt;
  (void)max_norm;
  return false;
#endif
}

}  // namespace patchllm
