// Fused mask-learning kernels (interface and math: mask_kernels.h). Memory-bound elementwise passes: one thread per
// group of 4 consecutive weights (8 bytes of bf16), one block per band of a tile's rows, so a tile's reduction
// (dL/dt, the norm) is a block reduction into one partial, summed per tile by the caller in a fixed order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/mask_kernels.h"
#include "ops/philox.h"

namespace patchllm {
namespace {

constexpr int THREADS = 256;
constexpr int TARGET_BLOCKS = 1024;  // ≥ 4 waves of 256-thread blocks on 132 SMs

struct F4 {
  float v[4];
};

template <typename T>
__device__ __forceinline__ F4 load4(const void* base, int64_t i) {  // elements 4i .. 4i + 3
  F4 r;
  if constexpr (sizeof(T) == 4) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(base) + i);
    r = F4{{q.x, q.y, q.z, q.w}};
  } else {
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(base) + i);
    const T* h = reinterpret_cast<const T*>(&q);
    for (int j = 0; j < 4; ++j) r.v[j] = float(h[j]);
  }
  return r;
}
template <typename T>
__device__ __forceinline__ void store4(void* base, int64_t i, const F4& x) {
  if constexpr (sizeof(T) == 4) {
    reinterpret_cast<float4*>(base)[i] = make_float4(x.v[0], x.v[1], x.v[2], x.v[3]);
  } else {
    uint2 q;
    T* h = reinterpret_cast<T*>(&q);
    for (int j = 0; j < 4; ++j) h[j] = T(x.v[j]);
    reinterpret_cast<uint2*>(base)[i] = q;
  }
}

// The block's band of one tile: rows [r, r_end) × groups [g0, g0 + ng) of 4 columns; blockIdx.x = tile·splits + band.
struct Band {
  int64_t tile, r, r_end, g0, ng, gpr;  // gpr: groups per matrix row
};
__device__ __forceinline__ Band band_of(const MaskKernelArgs& a, int splits) {
  const int64_t gc = (a.cols + a.tile_c - 1) / a.tile_c;
  const int64_t tile = blockIdx.x / splits, s = blockIdx.x % splits;
  const int64_t r0 = tile / gc * a.tile_r, c0 = tile % gc * a.tile_c;
  const int64_t nr = min(a.tile_r, a.rows - r0);
  return Band{tile, r0 + nr * s / splits, r0 + nr * (s + 1) / splits, c0 / 4, min(a.tile_c, a.cols - c0) / 4,
              a.cols / 4};
}

__device__ __forceinline__ float block_sum(float v) {
  __shared__ float red[THREADS / 32];
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = threadIdx.x < THREADS / 32 ? red[threadIdx.x] : 0.f;
  if (threadIdx.x < 32)
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;  // valid in thread 0
}

// Runs f(group index) over the block's band.
template <typename F>
__device__ __forceinline__ void for_band(const Band& b, F&& f) {
  const int64_t n = (b.r_end - b.r) * b.ng;
  for (int64_t i = threadIdx.x; i < n; i += THREADS) f((b.r + i / b.ng) * b.gpr + b.g0 + i % b.ng);
}

// ---- Tile mode ---------------------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(THREADS) tile_fwd_kernel(const MaskKernelArgs a, int splits) {
  const Band b = band_of(a, splits);
  const float t = a.t[b.tile];
  for_band(b, [&](int64_t g) {
    F4 w = load4<T>(a.w, g);
    const uint32_t k = __ldg(reinterpret_cast<const uint32_t*>(a.keep) + g);  // 4 bools
    for (int j = 0; j < 4; ++j)
      if (!((k >> (8 * j)) & 0xffu)) w.v[j] *= t;
    store4<T>(a.weff, g, w);
  });
}

template <typename T>
__global__ void __launch_bounds__(THREADS) tile_bwd_kernel(const MaskKernelArgs a, int splits) {
  const Band b = band_of(a, splits);
  const float t = a.t ? a.t[b.tile] : 0.f;  // only for W_eff
  float acc = 0.f;  // dL/dt = Σ_tile dL/dW_eff ⊙ W ⊙ (1 − M24)
  for_band(b, [&](int64_t g) {
    const F4 w = load4<T>(a.w, g), gw = load4<T>(a.gw, g);
    const uint32_t k = __ldg(reinterpret_cast<const uint32_t*>(a.keep) + g);
    F4 e = w;
    for (int j = 0; j < 4; ++j)
      if (!((k >> (8 * j)) & 0xffu)) acc += gw.v[j] * w.v[j], e.v[j] *= t;
    if (a.weff) store4<T>(a.weff, g, e);  // W_eff for the dL/dx GEMM, instead of another forward pass
  });
  acc = block_sum(acc);
  if (threadIdx.x == 0) a.partial[blockIdx.x] = acc;
}

// ---- Joint mode --------------------------------------------------------------------------------------------------
// Candidates (order 1100, 1010, 1001, 0110, 0101, 0011): m24[j] = Σ_i y_i C[i][j].
struct Soft {
  float y[6];   // soft pattern weights
  float m[4];   // the forward's M24 (soft, or the argmax pattern when hard)
};
__device__ __forceinline__ Soft joint_group(const MaskKernelArgs& a, int64_t g) {
  const float2* p = reinterpret_cast<const float2*>(a.phi + 6 * g);  // 24-byte rows: 8-byte aligned
  const float2 p0 = __ldg(p), p1 = __ldg(p + 1), p2 = __ldg(p + 2);
  const float phi[6] = {p0.x, p0.y, p1.x, p1.y, p2.x, p2.y};
  // Elements 6g .. 6g + 5 of the noise sequence: words (6g mod 4 = 0 or 2) .. of two consecutive Philox blocks.
  const uint64_t e0 = 6 * uint64_t(g);
  const Philox4 b0 = philox_block(a.seed, e0 >> 2), b1 = philox_block(a.seed, (e0 >> 2) + 1);
  const uint32_t w[8] = {b0.v[0], b0.v[1], b0.v[2], b0.v[3], b1.v[0], b1.v[1], b1.v[2], b1.v[3]};
  const int off = int(e0 & 3);
  Soft s;
  float mx = -INFINITY;
  int arg = 0;
  const float inv_tau = 1.f / a.tau;  // multiplications, not divisions: the pass is bound by this arithmetic
  for (int i = 0; i < 6; ++i) {
    // Accurate logf both times: near u = 1 the inner log is ~1e-7 and a fast log would lose it.
    const float gum = -logf(-logf(philox_unit(off ? w[i + 2] : w[i])));  // constant indices: registers
    s.y[i] = (a.kappa * phi[i] + gum) * inv_tau;
    if (s.y[i] > mx) mx = s.y[i], arg = i;
  }
  float sum = 0.f;
  for (int i = 0; i < 6; ++i) sum += (s.y[i] = __expf(s.y[i] - mx));  // arguments ≤ 0: ex2.approx is accurate
  const float inv_sum = 1.f / sum;
  for (int i = 0; i < 6; ++i) s.y[i] *= inv_sum;
  if (a.hard) {
    const uint32_t keep = 0xCA6953u >> (4 * arg);  // nibble i: candidate i's kept positions (bit j = position j)
    for (int j = 0; j < 4; ++j) s.m[j] = float((keep >> j) & 1);
  } else {
    s.m[0] = s.y[0] + s.y[1] + s.y[2];
    s.m[1] = s.y[0] + s.y[3] + s.y[4];
    s.m[2] = s.y[1] + s.y[3] + s.y[5];
    s.m[3] = s.y[2] + s.y[4] + s.y[5];
  }
  return s;
}

template <typename T, bool NORM>
__global__ void __launch_bounds__(THREADS) joint_fwd_kernel(const MaskKernelArgs a, int splits) {
  const Band b = band_of(a, splits);
  const float t = a.t ? a.t[b.tile] : 0.f;  // M = t + (1 − t)·M24; without tiles M = M24
  float acc = 0.f;
  for_band(b, [&](int64_t g) {
    const Soft s = joint_group(a, g);
    F4 w = load4<T>(a.w, g);
    for (int j = 0; j < 4; ++j) {
      w.v[j] *= t + (1.f - t) * s.m[j];
      if (NORM) acc += w.v[j] * w.v[j];
    }
    store4<T>(a.weff, g, w);
  });
  if (NORM) {
    acc = block_sum(acc);
    if (threadIdx.x == 0) a.partial[blockIdx.x] = acc;
  }
}

template <typename T>
__global__ void __launch_bounds__(THREADS) joint_bwd_kernel(const MaskKernelArgs a, int splits) {
  const Band b = band_of(a, splits);
  const float t = a.t ? a.t[b.tile] : 0.f;
  const float coef = a.norm_coef ? *a.norm_coef : 0.f;
  const float scale = a.kappa * (1.f / a.tau);
  float acc = 0.f;  // dL/dt
  for_band(b, [&](int64_t g) {
    const Soft s = joint_group(a, g);
    const F4 w = load4<T>(a.w, g), gw = load4<T>(a.gw, g);
    float dm[4];
    F4 e;
    for (int j = 0; j < 4; ++j) {
      const float M = t + (1.f - t) * s.m[j];
      const float dM = gw.v[j] * w.v[j] + coef * M * w.v[j] * w.v[j];
      acc += dM * (1.f - s.m[j]);
      dm[j] = (1.f - t) * dM;
      e.v[j] = w.v[j] * M;
    }
    if (a.weff) store4<T>(a.weff, g, e);  // W_eff for the dL/dx GEMM, instead of another forward pass
    // dL/dy_i = Σ_j C[i][j] dm_j, then the softmax backward, times κ/τ.
    const float dy[6] = {dm[0] + dm[1], dm[0] + dm[2], dm[0] + dm[3], dm[1] + dm[2], dm[1] + dm[3], dm[2] + dm[3]};
    float dot = 0.f;
    for (int i = 0; i < 6; ++i) dot += s.y[i] * dy[i];
    float2* out = reinterpret_cast<float2*>(a.dphi + 6 * g);
    float d[6];
    for (int i = 0; i < 6; ++i) d[i] = scale * s.y[i] * (dy[i] - dot);
    out[0] = make_float2(d[0], d[1]);
    out[1] = make_float2(d[2], d[3]);
    out[2] = make_float2(d[4], d[5]);
  });
  if (a.t) {
    acc = block_sum(acc);
    if (threadIdx.x == 0) a.partial[blockIdx.x] = acc;
  }
}

// ---- AdamW -------------------------------------------------------------------------------------------------------
__global__ void __launch_bounds__(THREADS) adamw_kernel(const AdamWArgs a) {
  const float gs = a.grad_scale ? *a.grad_scale : 1.f;
  const float decay = 1.f - a.lr * a.weight_decay, step = a.lr / a.bias_correction1;
  const float rs2 = 1.f / sqrtf(a.bias_correction2);
  for (int64_t i = blockIdx.x * int64_t(THREADS) + threadIdx.x; i < a.n; i += int64_t(gridDim.x) * THREADS) {
    const float g = a.g[i] * gs;
    const float m = a.beta1 * a.m[i] + (1.f - a.beta1) * g;
    const float v = a.beta2 * a.v[i] + (1.f - a.beta2) * g * g;
    a.m[i] = m;
    a.v[i] = v;
    a.p[i] = a.p[i] * decay - step * m / (sqrtf(v) * rs2 + a.eps);
  }
}

int64_t n_tiles(const MaskKernelArgs& a) { return mask_grid_r(a) * mask_grid_c(a); }

// KERNEL<T, extra template arguments...> for the args' dtype, on the args' stream.
#define PATCHLLM_MASK_LAUNCH(KERNEL, ...)                                                             \
  do {                                                                                                \
    const int splits = mask_kernel_splits(a);                                                        \
    const dim3 grid(unsigned(n_tiles(a) * splits));                                                  \
    cudaStream_t st = static_cast<cudaStream_t>(a.stream);                                           \
    if (a.dtype == MASK_F32) KERNEL<float __VA_ARGS__><<<grid, THREADS, 0, st>>>(a, splits);         \
    else if (a.dtype == MASK_BF16) KERNEL<__nv_bfloat16 __VA_ARGS__><<<grid, THREADS, 0, st>>>(a, splits); \
    else KERNEL<__half __VA_ARGS__><<<grid, THREADS, 0, st>>>(a, splits);                            \
    return int(cudaGetLastError());                                                                  \
  } while (0)

}  // namespace

int mask_kernel_splits(const MaskKernelArgs& a) {
  const int64_t tiles = n_tiles(a), per = (TARGET_BLOCKS + tiles - 1) / tiles;
  return int(per < 1 ? 1 : per > a.tile_r ? a.tile_r : per);
}

int tile_mask_forward(const MaskKernelArgs& a) { PATCHLLM_MASK_LAUNCH(tile_fwd_kernel); }
int tile_mask_backward(const MaskKernelArgs& a) { PATCHLLM_MASK_LAUNCH(tile_bwd_kernel); }
int joint_mask_forward(const MaskKernelArgs& a) {
  if (a.partial) PATCHLLM_MASK_LAUNCH(joint_fwd_kernel, , true);
  PATCHLLM_MASK_LAUNCH(joint_fwd_kernel, , false);
}
int joint_mask_backward(const MaskKernelArgs& a) { PATCHLLM_MASK_LAUNCH(joint_bwd_kernel); }
int adamw_fused(const AdamWArgs& a) {
  if (a.n <= 0) return 0;
  const int64_t blocks = std::min<int64_t>((a.n + THREADS - 1) / THREADS, 132 * 8);  // grid-stride beyond that
  adamw_kernel<<<unsigned(blocks), THREADS, 0, static_cast<cudaStream_t>(a.stream)>>>(a);
  return int(cudaGetLastError());
}
const char* mask_kernel_error_string(int err) { return cudaGetErrorString(cudaError_t(err)); }

}  // namespace patchllm
