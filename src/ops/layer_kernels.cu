// Fused decoder-layer kernels (interface and semantics: layer_kernels.h). Memory-bound and tiny at decode: one block
// per row for the norm (a row is at most a few KB, so the second pass re-reads it from L1/L2), one thread per element
// pair / element group for RoPE and SiLU·mul. Vector accesses of 4 elements where sizes, strides and addresses allow.
// Every kernel first lets the next grid be scheduled and then waits for the previous one (ops/pdl.cuh): a hybrid
// decode kernel launched with PDL after a norm or SiLU·mul loads its first weights while they run, and with
// pdl set these kernels themselves start during the tail of the kernel before them.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "ops/layer_kernels.h"
#include "ops/pdl.cuh"

namespace patchllm {
namespace {

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return float(v);
}
template <typename T>
__device__ __forceinline__ T from_f(float v) {
  return T(v);  // round to nearest even, as LibTorch's casts
}
// The dtype's rounding of an fp32 value, back in fp32 (identity for fp32).
template <typename T>
__device__ __forceinline__ float rnd(float v) {
  return to_f(from_f<T>(v));
}

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {  // one 4·sizeof(T)-byte access for V = 4
  T v[V];
};
template <typename T, int V>
__device__ __forceinline__ void load(const T* p, float (&out)[V]) {
  const Vec<T, V> q = *reinterpret_cast<const Vec<T, V>*>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = to_f(q.v[j]);
}
template <typename T, int V>
__device__ __forceinline__ void store(T* p, const float (&in)[V]) {
  Vec<T, V> q;
#pragma unroll
  for (int j = 0; j < V; ++j) q.v[j] = from_f<T>(in[j]);
  *reinterpret_cast<Vec<T, V>*>(p) = q;
}
__device__ __forceinline__ const char* row_ptr(const LayerRows& m, int64_t r, int esize) {
  return static_cast<const char*>(m.data) + ((r / m.inner) * m.outer_stride + (r % m.inner) * m.inner_stride) * esize;
}

constexpr int NORM_THREADS = 256;

__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[NORM_THREADS / 32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (int i = 0; i < int(blockDim.x / 32); ++i) s += part[i];  // fixed order: deterministic
    total = s;
  }
  __syncthreads();
  return total;
}

// One block per row. Pass 1: (x + residual, rounded and stored) and the sum of squares; pass 2: normalise and scale
// (reads back x, or the sum this same thread stored).
template <typename T, int V, bool RES, bool GEMMA>
__global__ void __launch_bounds__(NORM_THREADS) rms_norm_kernel(RmsNormArgs a) {
  pdl_launch_dependents();
  pdl_grid_dependency_wait();
  const int64_t r = blockIdx.x;
  const T* x = reinterpret_cast<const T*>(row_ptr(a.x, r, sizeof(T)));
  const T* res = RES ? reinterpret_cast<const T*>(row_ptr(a.residual, r, sizeof(T))) : nullptr;
  T* sum = RES ? static_cast<T*>(a.sum_out) + r * a.cols : nullptr;
  T* y = static_cast<T*>(a.y) + r * a.cols;
  const T* w = static_cast<const T*>(a.w);
  float ss = 0;
  for (int64_t c = int64_t(threadIdx.x) * V; c < a.cols; c += int64_t(blockDim.x) * V) {
    float v[V];
    load<T, V>(x + c, v);
    if constexpr (RES) {
      float q[V];
      load<T, V>(res + c, q);
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = rnd<T>(v[j] + q[j]);
      store<T, V>(sum + c, v);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) ss += v[j] * v[j];
  }
  ss = block_sum(ss);
  const float rs = rsqrtf(ss / float(a.cols) + a.eps);
  for (int64_t c = int64_t(threadIdx.x) * V; c < a.cols; c += int64_t(blockDim.x) * V) {
    float v[V], wv[V];
    load<T, V>(RES ? sum + c : x + c, v);
    load<T, V>(w + c, wv);
#pragma unroll
    for (int j = 0; j < V; ++j)
      v[j] = GEMMA ? __fmul_rn(__fmul_rn(v[j], rs), 1.f + wv[j]) : __fmul_rn(wv[j], rnd<T>(__fmul_rn(v[j], rs)));
    store<T, V>(y + c, v);
  }
}

// One thread per (row, i < D/2) pair; rows of q first, then of k, then (with the caches) of v.
template <typename T>
__global__ void rope_kernel(RopeArgs a) {
  pdl_launch_dependents();
  pdl_grid_dependency_wait();
  const int64_t half = a.D / 2, bt_rows = a.B * a.T, rows_q = bt_rows * a.q.heads, rows_k = bt_rows * a.k.heads;
  const int64_t rows = rows_q + rows_k + (a.k_cache ? rows_k : 0);
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < rows * half;
       idx += int64_t(gridDim.x) * blockDim.x) {
    int64_t row = idx / half;
    const int64_t i = idx % half;
    const int part = row < rows_q ? 0 : row < rows_q + rows_k ? 1 : 2;  // q, k, v
    const RopeTensor& t = part == 0 ? a.q : part == 1 ? a.k : a.v;
    row -= part == 0 ? 0 : part == 1 ? rows_q : rows_q + rows_k;
    const int64_t h = row % t.heads, bt = row / t.heads, b = bt / a.T, tt = bt % a.T;
    const T* x = static_cast<const T*>(t.x) + b * t.sb + tt * t.st + h * t.sh;
    T* y;
    if (part == 0 || !a.k_cache) {
      y = static_cast<T*>(t.y) + row * a.D;
    } else {
      const int64_t slot = a.pos[tt];
      if (slot < 0 || slot >= a.capacity) continue;
      y = static_cast<T*>(part == 1 ? a.k_cache : a.v_cache) + ((b * t.heads + h) * a.capacity + slot) * a.D;
    }
    if (part == 2) {  // v: copied as is
      y[i] = x[i];
      y[i + half] = x[i + half];
      continue;
    }
    const int64_t cs = ((a.cos_per_batch ? b : 0) * a.T + tt) * a.D;
    const T* cp = static_cast<const T*>(a.cos) + cs;
    const T* sp = static_cast<const T*>(a.sin) + cs;
    const float x1 = to_f(x[i]), x2 = to_f(x[i + half]);
    // __fmul_rn: no contraction into an fma, so fp32 rounds as the separate LibTorch ops do too.
    y[i] = from_f<T>(rnd<T>(__fmul_rn(x1, to_f(cp[i]))) + rnd<T>(__fmul_rn(-x2, to_f(sp[i]))));
    y[i + half] = from_f<T>(rnd<T>(__fmul_rn(x2, to_f(cp[i + half]))) + rnd<T>(__fmul_rn(x1, to_f(sp[i + half]))));
  }
}

// One thread per V consecutive elements of a row.
template <typename T, int V>
__global__ void silu_mul_kernel(SiluMulArgs a) {
  pdl_launch_dependents();
  pdl_grid_dependency_wait();
  const int64_t per_row = a.cols / V, n = a.rows * per_row;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / per_row, c = idx % per_row * V;
    float g[V], u[V];
    load<T, V>(static_cast<const T*>(a.g) + r * a.gs + c, g);
    load<T, V>(static_cast<const T*>(a.u) + r * a.us + c, u);
#pragma unroll
    for (int j = 0; j < V; ++j) g[j] = rnd<T>(g[j] / (1.f + expf(-g[j]))) * u[j];
    store<T, V>(static_cast<T*>(a.y) + r * a.cols + c, g);
  }
}

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int grid_for(int64_t work, int threads) { return int(std::min<int64_t>((work + threads - 1) / threads, 65535 * 8)); }

// Whether the device code loaded for this GPU was built from sm_90+ PTX, so that its kernels wait for the previous
// grid (griddepcontrol); a PDL launch of older code would race with it. Every kernel here comes from the same
// -gencode list, so one answers for all; asked once (one GPU kind per process, as the hybrid kernels assume).
// cudaFuncGetAttributes does not synchronise, so the first call may come inside a CUDA-graph capture.
bool pdl_code_loaded() {
  static const bool ok = [] {
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, silu_mul_kernel<float, 1>) == cudaSuccess && fa.ptxVersion >= 90;
  }();
  return ok;
}

// <<<grid, block, 0, s>>>, with programmatic dependent launch where asked and the code waits for it.
template <typename... P, typename... A>
int launch(void (*kernel)(P...), unsigned grid, unsigned block, cudaStream_t s, bool pdl, A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cfg.stream = s;
  cudaLaunchAttribute at[1];
  if (pdl && pdl_code_loaded()) {
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
  }
  return int(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...));
}

template <typename F>
int by_width(bool wide, F&& f) {
  return wide ? f(std::integral_constant<int, 4>{}) : f(std::integral_constant<int, 1>{});
}

template <typename T>
int rms_norm_t(const RmsNormArgs& a) {
  const int vb = 4 * int(sizeof(T));
  const bool res = a.residual.data != nullptr;
  const bool wide = a.cols % 4 == 0 && aligned(a.x.data, vb) && a.x.outer_stride % 4 == 0 &&
                    a.x.inner_stride % 4 == 0 && aligned(a.w, vb) && aligned(a.y, vb) &&
                    (!res || (aligned(a.residual.data, vb) && a.residual.outer_stride % 4 == 0 &&
                              a.residual.inner_stride % 4 == 0 && aligned(a.sum_out, vb)));
  const int threads =
      int(std::min<int64_t>(NORM_THREADS, std::max<int64_t>(32, (a.cols / (wide ? 4 : 1) + 31) / 32 * 32)));
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  return by_width(wide, [&](auto v) {
    constexpr int V = decltype(v)::value;
    auto* k = res ? (a.gemma ? rms_norm_kernel<T, V, true, true> : rms_norm_kernel<T, V, true, false>)
                  : (a.gemma ? rms_norm_kernel<T, V, false, true> : rms_norm_kernel<T, V, false, false>);
    return launch(k, unsigned(a.rows), unsigned(threads), s, a.pdl, a);
  });
}

template <typename T>
int silu_mul_t(const SiluMulArgs& a) {
  const int vb = 4 * int(sizeof(T));
  const bool wide =
      a.cols % 4 == 0 && a.gs % 4 == 0 && a.us % 4 == 0 && aligned(a.g, vb) && aligned(a.u, vb) && aligned(a.y, vb);
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  return by_width(wide, [&](auto v) {
    constexpr int V = decltype(v)::value;
    return launch(silu_mul_kernel<T, V>, unsigned(grid_for(a.rows * a.cols / V, 256)), 256, s, a.pdl, a);
  });
}

template <typename F>
int by_dtype(int dtype, F&& f) {
  switch (dtype) {
    case LAYER_F32: return f(float{});
    case LAYER_BF16: return f(__nv_bfloat16{});
    case LAYER_F16: return f(__half{});
    default: return int(cudaErrorInvalidValue);
  }
}

}  // namespace

int launch_rms_norm(const RmsNormArgs& a) {
  if (a.rows <= 0 || a.cols <= 0) return 0;
  if (a.rows > 0x7fffffff || a.x.inner <= 0 || (a.residual.data && a.residual.inner <= 0))
    return int(cudaErrorInvalidValue);
  return by_dtype(a.dtype, [&](auto t) { return rms_norm_t<decltype(t)>(a); });
}

int launch_rope(const RopeArgs& a) {
  const int64_t pairs = a.B * a.T * (a.q.heads + a.k.heads * (a.k_cache ? 2 : 1)) * (a.D / 2);
  if (pairs <= 0) return 0;
  if (a.D % 2 != 0 || (a.k_cache && (!a.v_cache || !a.pos || a.v.heads != a.k.heads)))
    return int(cudaErrorInvalidValue);
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  return by_dtype(a.dtype, [&](auto t) {
    return launch(rope_kernel<decltype(t)>, unsigned(grid_for(pairs, 256)), 256, s, a.pdl, a);
  });
}

int launch_silu_mul(const SiluMulArgs& a) {
  if (a.rows <= 0 || a.cols <= 0) return 0;
  return by_dtype(a.dtype, [&](auto t) { return silu_mul_t<decltype(t)>(a); });
}

const char* layer_kernel_error_string(int err) { return cudaGetErrorString(cudaError_t(err)); }

}  // namespace patchllm
