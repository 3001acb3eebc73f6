#include "ops/layer_ops.h"

#include <atomic>
#include <limits>

#include "core/error.h"

#if defined(PATCHLLM_HAVE_CUDA_KERNELS) && defined(PATCHLLM_TORCH_HAS_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ops/hybrid_linear.h"
#include "ops/layer_kernels.h"
#define PATCHLLM_LAYER_KERNELS 1
#endif

namespace patchllm {

// ---- references ----

// HF LlamaRMSNorm: normalise in fp32, cast back, then scale by the weight.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto xf = x.to(torch::kFloat32);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return w * (xf * torch::rsqrt(var + eps)).to(x.scalar_type());
}

// HF Gemma3RMSNorm: (x̂ * (1 + w)) in fp32, cast back afterwards (LLaMA casts before scaling).
torch::Tensor rms_norm_gemma(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto xf = x.to(torch::kFloat32);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return (xf * torch::rsqrt(var + eps) * (1 + w.to(torch::kFloat32))).to(x.scalar_type());
}

// HF rotate_half convention: the two halves of each head are the (real, imaginary) pairs.
torch::Tensor rope_apply(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t h = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, h), x2 = x.narrow(-1, h, h);
  auto rot = torch::cat({-x2, x1}, -1);
  return x * cos.unsqueeze(1) + rot * sin.unsqueeze(1);
}

namespace {

std::atomic<bool> g_fused{true}, g_fused_attention{true};

torch::Tensor norm_ref(const torch::Tensor& x, const torch::Tensor& w, double eps, NormStyle style) {
  return style == NormStyle::Llama ? rms_norm(x, w, eps) : rms_norm_gemma(x, w, eps);
}

#ifdef PATCHLLM_LAYER_KERNELS
// The kernels run on CUDA tensors of one device and dtype (fp32, bf16, fp16) when nothing needs a gradient.
bool use_kernels(std::initializer_list<const torch::Tensor*> ts) {
  if (!g_fused.load(std::memory_order_relaxed)) return false;
  const torch::Tensor& x = **ts.begin();
  if (!x.defined() || !x.is_cuda()) return false;
  const auto dt = x.scalar_type();
  if (dt != torch::kFloat32 && dt != torch::kBFloat16 && dt != torch::kHalf) return false;
  const bool grad = torch::GradMode::is_enabled();
  for (const torch::Tensor* t : ts)
    if (!t->defined() || t->device() != x.device() || t->scalar_type() != dt || (grad && t->requires_grad()))
      return false;
  return true;
}

int layer_dtype(const torch::Tensor& x) {
  return x.scalar_type() == torch::kFloat32 ? LAYER_F32 : x.scalar_type() == torch::kBFloat16 ? LAYER_BF16 : LAYER_F16;
}

void* stream_of(const torch::Tensor& x) { return c10::cuda::getCurrentCUDAStream(x.device().index()).stream(); }
// The decode step's launch option (HybridKernelOptions::pdl, on by default): programmatic dependent launch for the
// layer kernels as for the hybrid decode kernels between them.
bool launch_with_pdl() { return hybrid_kernel_options().pdl; }

void check_launch(int err, const char* what) {
  if (err != 0)
    throw CudaError(
        str(__FILE__, ":", __LINE__, ": ", what, ": CUDA error ", err, " (", layer_kernel_error_string(err), ")"));
}

// The kernels read the last dim as contiguous elements.
bool last_dim_contiguous(const torch::Tensor& x) { return x.size(-1) <= 1 || x.stride(-1) == 1; }

// Whether dims [0, n) of x collapse into one index (size-1 dims ignored); stride = the collapsed index's stride.
bool collapse(const torch::Tensor& x, int64_t n, int64_t& stride) {
  stride = 0;
  int64_t prev = -1;
  for (int64_t i = n - 1; i >= 0; --i) {
    if (x.size(i) == 1) continue;
    if (prev >= 0 && x.stride(i) != x.stride(prev) * x.size(prev)) return false;
    if (prev < 0) stride = x.stride(i);
    prev = i;
  }
  return true;
}

// x [..., inner, C] with C contiguous as the kernels' LayerRows (leading dims collapsed); false if they do not
// collapse.
bool describe_rows(const torch::Tensor& x, LayerRows& m) {
  const int64_t d = x.dim();
  if (d == 0 || !last_dim_contiguous(x)) return false;
  m.data = x.data_ptr();
  if (d == 1) {
    m.inner = 1, m.inner_stride = m.outer_stride = 0;
    return true;
  }
  m.inner = x.size(d - 2);
  m.inner_stride = x.stride(d - 2);
  return collapse(x, d - 2, m.outer_stride);
}

// x itself, or a contiguous copy when its rows cannot be described.
torch::Tensor rows_view(const torch::Tensor& x, LayerRows& m) {
  if (describe_rows(x, m)) return x;
  torch::Tensor c = x.contiguous();
  describe_rows(c, m);
  return c;
}

void run_norm(const torch::Tensor& x, const torch::Tensor* r, torch::Tensor* sum, const torch::Tensor& w,
              torch::Tensor& y, double eps, NormStyle style) {
  c10::cuda::CUDAGuard guard(x.device());
  RmsNormArgs a;
  a.dtype = layer_dtype(x);
  a.cols = x.size(-1);
  a.rows = a.cols == 0 ? 0 : x.numel() / a.cols;
  torch::Tensor xv = rows_view(x, a.x), rv, wc = w.contiguous();
  if (r) {
    rv = rows_view(*r, a.residual);
    *sum = torch::empty(x.sizes(), x.options());
    a.sum_out = sum->data_ptr();
  }
  y = torch::empty(x.sizes(), x.options());
  a.w = wc.data_ptr();
  a.y = y.data_ptr();
  a.eps = float(eps);
  a.gemma = style == NormStyle::Gemma;
  a.stream = stream_of(x);
  a.pdl = launch_with_pdl();
  check_launch(launch_rms_norm(a), "rms_norm_fused");
}
#endif

}  // namespace

void set_fused_layer_ops(bool on) { g_fused.store(on); }
bool fused_layer_ops() { return g_fused.load(); }
void set_fused_decode_attention(bool on) { g_fused_attention.store(on); }
bool fused_decode_attention() { return g_fused_attention.load(); }

torch::Tensor rms_norm_fused(const torch::Tensor& x, const torch::Tensor& w, double eps, NormStyle style) {
#ifdef PATCHLLM_LAYER_KERNELS
  if (use_kernels({&x, &w}) && x.dim() >= 1 && w.dim() == 1 && w.size(0) == x.size(-1)) {
    torch::Tensor y;
    run_norm(x, nullptr, nullptr, w, y, eps, style);
    return y;
  }
#endif
  return norm_ref(x, w, eps, style);
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm_fused(const torch::Tensor& h, const torch::Tensor& r,
                                                           const torch::Tensor& w, double eps, NormStyle style) {
#ifdef PATCHLLM_LAYER_KERNELS
  if (use_kernels({&h, &r, &w}) && h.dim() >= 1 && h.sizes() == r.sizes() && w.dim() == 1 && w.size(0) == h.size(-1)) {
    torch::Tensor s, y;
    run_norm(h, &r, &s, w, y, eps, style);
    return {s, y};
  }
#endif
  auto s = h + r;
  return {s, norm_ref(s, w, eps, style)};
}

namespace {

std::pair<torch::Tensor, torch::Tensor> rope_ref(const torch::Tensor& q, const torch::Tensor& k,
                                                 const torch::Tensor& cos, const torch::Tensor& sin) {
  return {rope_apply(q.transpose(1, 2), cos, sin).transpose(1, 2),
          rope_apply(k.transpose(1, 2), cos, sin).transpose(1, 2)};
}

#ifdef PATCHLLM_LAYER_KERNELS
// The rope kernels' common conditions on q, k (and v), cos and sin.
bool rope_fits(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& cos, const torch::Tensor& sin) {
  auto fits = [&](const torch::Tensor& x) {
    return x.dim() == 4 && x.size(0) == q.size(0) && x.size(1) == q.size(1) && x.size(3) == q.size(3) &&
           last_dim_contiguous(x);
  };
  return fits(q) && fits(k) && q.size(3) % 2 == 0 && cos.dim() == 3 && cos.sizes() == sin.sizes() &&
         (cos.size(0) == 1 || cos.size(0) == q.size(0)) && cos.size(1) == q.size(1) && cos.size(2) == q.size(3);
}

RopeTensor rope_tensor(const torch::Tensor& x, void* y) {
  return {x.data_ptr(), x.size(2), x.stride(0), x.stride(1), x.stride(2), y};
}

// Launches the rope kernel; k_cache set: k and v go to the caches at pos.
void run_rope(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& cos, const torch::Tensor& sin,
              torch::Tensor& yq, torch::Tensor* yk, const torch::Tensor* v, torch::Tensor* k_cache,
              torch::Tensor* v_cache, const torch::Tensor* pos) {
  c10::cuda::CUDAGuard guard(q.device());
  torch::Tensor c = cos.contiguous(), s = sin.contiguous();
  yq = torch::empty(q.sizes(), q.options());
  RopeArgs a;
  a.dtype = layer_dtype(q);
  a.B = q.size(0), a.T = q.size(1), a.D = q.size(3);
  a.q = rope_tensor(q, yq.data_ptr());
  a.cos = c.data_ptr();
  a.sin = s.data_ptr();
  a.cos_per_batch = c.size(0) > 1;
  if (k_cache) {
    a.k = rope_tensor(k, nullptr);
    a.v = rope_tensor(*v, nullptr);
    a.k_cache = k_cache->data_ptr();
    a.v_cache = v_cache->data_ptr();
    a.pos = pos->data_ptr<int64_t>();
    a.capacity = k_cache->size(2);
  } else {
    *yk = torch::empty(k.sizes(), k.options());
    a.k = rope_tensor(k, yk->data_ptr());
  }
  a.stream = stream_of(q);
  a.pdl = launch_with_pdl();
  check_launch(launch_rope(a), "rope_qk_fused");
}
#endif

}  // namespace

std::pair<torch::Tensor, torch::Tensor> rope_qk_fused(const torch::Tensor& q, const torch::Tensor& k,
                                                      const torch::Tensor& cos, const torch::Tensor& sin) {
#ifdef PATCHLLM_LAYER_KERNELS
  if (use_kernels({&q, &k, &cos, &sin}) && rope_fits(q, k, cos, sin)) {
    torch::Tensor yq, yk;
    run_rope(q, k, cos, sin, yq, &yk, nullptr, nullptr, nullptr, nullptr);
    return {yq, yk};
  }
#endif
  return rope_ref(q, k, cos, sin);
}

torch::Tensor rope_qk_to_cache(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor& k_cache,
                               torch::Tensor& v_cache, const torch::Tensor& pos) {
#ifdef PATCHLLM_LAYER_KERNELS
  auto cache_fits = [&](const torch::Tensor& c) {
    return c.dim() == 4 && c.is_contiguous() && c.size(0) == k.size(0) && c.size(1) == k.size(2) &&
           c.size(3) == k.size(3);
  };
  if (use_kernels({&q, &k, &v, &cos, &sin, &k_cache, &v_cache}) && rope_fits(q, k, cos, sin) &&
      v.sizes() == k.sizes() && last_dim_contiguous(v) && cache_fits(k_cache) && cache_fits(v_cache) &&
      k_cache.size(2) == v_cache.size(2) && pos.device() == q.device() && pos.scalar_type() == torch::kLong &&
      pos.dim() == 1 && pos.size(0) == q.size(1) && pos.is_contiguous()) {
    torch::Tensor yq;
    run_rope(q, k, cos, sin, yq, nullptr, &v, &k_cache, &v_cache, &pos);
    return yq;
  }
#endif
  auto [yq, yk] = rope_ref(q, k, cos, sin);
  k_cache.index_copy_(2, pos, yk.transpose(1, 2));
  v_cache.index_copy_(2, pos, v.transpose(1, 2));
  return yq;
}

torch::Tensor silu_mul_fused(const torch::Tensor& g, const torch::Tensor& u) {
#ifdef PATCHLLM_LAYER_KERNELS
  int64_t gs = 0, us = 0;
  if (use_kernels({&g, &u}) && g.dim() >= 1 && g.sizes() == u.sizes() && last_dim_contiguous(g) &&
      last_dim_contiguous(u) && collapse(g, g.dim() - 1, gs) && collapse(u, u.dim() - 1, us)) {
    c10::cuda::CUDAGuard guard(g.device());
    torch::Tensor y = torch::empty(g.sizes(), g.options());
    SiluMulArgs a;
    a.dtype = layer_dtype(g);
    a.cols = g.size(-1);
    a.rows = a.cols == 0 ? 0 : g.numel() / a.cols;
    a.g = g.data_ptr(), a.u = u.data_ptr();
    a.gs = gs, a.us = us;
    a.y = y.data_ptr();
    a.stream = stream_of(g);
    a.pdl = launch_with_pdl();
    check_launch(launch_silu_mul(a), "silu_mul_fused");
    return y;
  }
#endif
  return torch::silu(g) * u;
}

torch::Tensor decode_attention_ref(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                                   const torch::Tensor& pos, const torch::Tensor& pad, int64_t span, int64_t window,
                                   double scale, double softcap) {
  PATCHLLM_CHECK(q.dim() == 4 && q.size(1) == 1 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes() &&
                     k_cache.size(0) == q.size(0) && k_cache.size(3) == q.size(3) && k_cache.size(1) > 0 &&
                     q.size(2) % k_cache.size(1) == 0 && span > 0 && span <= k_cache.size(2),
                 InvalidArgument, "decode attention: q ", q.sizes(), " and caches ", k_cache.sizes(), " over span ",
                 span, " do not fit");
  const int64_t B = q.size(0), H = q.size(2), D = q.size(3), Hk = k_cache.size(1);
  auto f32 = torch::kFloat32;
  auto qf = q.reshape({B, Hk, H / Hk, D}).to(f32);  // a kv head's query heads as rows
  auto s = torch::matmul(qf, k_cache.narrow(2, 0, span).to(f32).transpose(-1, -2)) * scale;  // [B, Hk, H/Hk, span]
  if (softcap > 0) s = torch::tanh(s / softcap) * softcap;
  auto kpos = torch::arange(span, torch::TensorOptions().dtype(torch::kLong).device(q.device()));
  auto p0 = pos.reshape({1}).to(q.device());
  auto ok = (kpos <= p0).view({1, -1});
  if (window > 0) ok = ok.logical_and(((p0 - kpos) < window).view({1, -1}));
  if (pad.defined()) ok = ok.logical_and(kpos.view({1, -1}) >= pad.to(q.device()).view({-1, 1}));
  s = s.masked_fill(ok.logical_not().view({ok.size(0), 1, 1, span}), -std::numeric_limits<float>::infinity());
  auto p = torch::softmax(s, -1).nan_to_num(0.0);  // a row with no visible slot: zeros
  auto y = torch::matmul(p, v_cache.narrow(2, 0, span).to(f32));  // [B, Hk, H/Hk, D]
  return y.reshape({B, 1, H * D}).to(q.scalar_type());
}

bool decode_attention_fusable(const torch::Tensor& q, const torch::Tensor& k_cache) {
#ifdef PATCHLLM_LAYER_KERNELS
  if (!g_fused_attention.load(std::memory_order_relaxed) || !use_kernels({&q, &k_cache})) return false;
  const auto dt = q.scalar_type();
  const int64_t D = q.dim() == 4 ? q.size(3) : 0;
  return (dt == torch::kBFloat16 || dt == torch::kHalf) && (D == 64 || D == 128 || D == 256) && q.size(1) == 1 &&
         q.is_contiguous() && k_cache.dim() == 4 && k_cache.is_contiguous() && k_cache.size(0) == q.size(0) &&
         k_cache.size(3) == D && k_cache.size(1) > 0 && q.size(2) % k_cache.size(1) == 0;
#else
  (void)q;
  (void)k_cache;
  return false;
#endif
}

torch::Tensor decode_attention_fused(const torch::Tensor& q, const torch::Tensor& k_cache,
                                     const torch::Tensor& v_cache, const torch::Tensor& pos, const torch::Tensor& pad,
                                     int64_t span, int64_t window, double scale, double softcap) {
#ifdef PATCHLLM_LAYER_KERNELS
  const int64_t B = q.dim() == 4 ? q.size(0) : 0;
  auto on_device_long = [&](const torch::Tensor& t, int64_t n) {
    return t.device() == q.device() && t.scalar_type() == torch::kLong && t.dim() == 1 && t.size(0) == n &&
           t.is_contiguous();
  };
  if (decode_attention_fusable(q, k_cache) && v_cache.sizes() == k_cache.sizes() && v_cache.is_contiguous() &&
      v_cache.device() == q.device() && v_cache.scalar_type() == q.scalar_type() && on_device_long(pos, 1) &&
      (!pad.defined() || on_device_long(pad, B))) {
    DecodeAttnArgs a;
    a.dtype = layer_dtype(q);
    a.B = B, a.H = q.size(2), a.Hk = k_cache.size(1), a.D = q.size(3);
    a.capacity = k_cache.size(2), a.span = span;
    a.window = window;
    a.scale = float(scale), a.softcap = float(softcap);
    if (decode_attention_supported(a)) {
      c10::cuda::CUDAGuard guard(q.device());
      torch::Tensor y = torch::empty({B, 1, a.H * a.D}, q.options()), ws;
      if (const int64_t n = decode_attention_workspace(a); n > 0)
        ws = torch::empty({n}, q.options().dtype(torch::kFloat32));
      a.q = q.data_ptr(), a.k_cache = k_cache.data_ptr(), a.v_cache = v_cache.data_ptr();
      a.pos = pos.data_ptr<int64_t>();
      a.pad = pad.defined() ? pad.data_ptr<int64_t>() : nullptr;
      a.y = y.data_ptr();
      a.workspace = ws.defined() ? ws.data_ptr<float>() : nullptr;
      a.stream = stream_of(q);
      a.pdl = launch_with_pdl();
      check_launch(launch_decode_attention(a), "decode_attention_fused");
      return y;
    }
  }
#endif
  return decode_attention_ref(q, k_cache, v_cache, pos, pad, span, window, scale, softcap);
}

}  // namespace patchllm
