// Fused decoder-layer kernels (interface and semantics: layer_kernels.h). Memory-bound and tiny at decode: one block
// per row for the norm (a row is at most a few KB, so the second pass re-reads it from L1/L2), one thread per element
// pair / element group for RoPE and SiLU·mul. Vector accesses of 4 elements where sizes, strides and addresses allow.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/layer_kernels.h"

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

// Flash-decoding, one block of ATTN_WARPS warps per (sequence·head, chunk). Each warp takes every ATTN_WARPS-th slot
// of the chunk; a lane holds E = D / 32 consecutive elements of q, of the key/value rows and of its accumulator. The
// warps' running (max, sum, acc) merge in shared memory; the block's result goes to y (one chunk) or to `partial`.
constexpr int ATTN_WARPS = 4;

template <typename T, int E>
__global__ void __launch_bounds__(ATTN_WARPS * 32) decode_attn_kernel(DecodeAttnArgs a) {
  const int64_t bh = blockIdx.x, b = bh / a.heads, h = bh % a.heads;
  const int64_t kvh = h / (a.heads / a.kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t pos = *a.pos, lo = a.window > 0 ? max(int64_t(0), pos - a.window + 1) : 0;
  const int64_t c0 = int64_t(blockIdx.y) * DECODE_ATTN_CHUNK;
  const int64_t first = max(lo, c0), last = min(pos, min(c0 + DECODE_ATTN_CHUNK, a.capacity) - 1);
  float q[E], acc[E];
  load<T, E>(static_cast<const T*>(a.q) + bh * a.D + lane * E, q);
#pragma unroll
  for (int j = 0; j < E; ++j) acc[j] = 0;
  float m = -INFINITY, l = 0;
  const int64_t row0 = (b * a.kv_heads + kvh) * a.capacity;
  for (int64_t s = first + warp; s <= last; s += ATTN_WARPS) {
    float kv[E];
    load<T, E>(static_cast<const T*>(a.k_cache) + (row0 + s) * a.D + lane * E, kv);
    float dot = 0;
#pragma unroll
    for (int j = 0; j < E; ++j) dot += q[j] * kv[j];
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    float sc = dot * a.scale;
    if (a.softcap > 0) sc = a.softcap * tanhf(sc / a.softcap);
    const float m2 = fmaxf(m, sc), corr = expf(m - m2), p = expf(sc - m2);
    load<T, E>(static_cast<const T*>(a.v_cache) + (row0 + s) * a.D + lane * E, kv);
    l = l * corr + p;
#pragma unroll
    for (int j = 0; j < E; ++j) acc[j] = acc[j] * corr + p * kv[j];
    m = m2;
  }
  // Merge the warps: every warp rescales to the block's max.
  __shared__ float wm[ATTN_WARPS], wl[ATTN_WARPS];
  __shared__ float wacc[ATTN_WARPS][32 * E];
  if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
  for (int j = 0; j < E; ++j) wacc[warp][lane * E + j] = acc[j];
  __syncthreads();
  float bm = -INFINITY;
  for (int w = 0; w < ATTN_WARPS; ++w) bm = fmaxf(bm, wm[w]);
  const int64_t chunks = gridDim.y;
  for (int64_t d = threadIdx.x; d < a.D + 2; d += blockDim.x) {
    float sl = 0, sa = 0;
    for (int w = 0; w < ATTN_WARPS; ++w) {
      if (wl[w] == 0) continue;  // a warp with no slot (its m is -inf)
      const float c = expf(wm[w] - bm);
      sl += wl[w] * c;
      if (d < a.D) sa += wacc[w][d] * c;
    }
    if (chunks == 1) {
      if (d < a.D) static_cast<T*>(a.y)[bh * a.D + d] = from_f<T>(sa / sl);
    } else {
      float* part = a.partial + (bh * chunks + blockIdx.y) * (a.D + 2);
      part[d] = d < a.D ? sa : d == a.D ? bm : sl;  // [acc..., max, sum]; sum 0 = empty chunk
    }
  }
}

// The chunks' partials of one (sequence·head) merged: thread d sums its accumulator element over the chunks.
template <typename T>
__global__ void decode_attn_combine(DecodeAttnArgs a, int64_t chunks) {
  const int64_t bh = blockIdx.x;
  const float* part = a.partial + bh * chunks * (a.D + 2);
  float gm = -INFINITY;
  for (int64_t c = 0; c < chunks; ++c)
    if (part[c * (a.D + 2) + a.D + 1] > 0) gm = fmaxf(gm, part[c * (a.D + 2) + a.D]);
  for (int64_t d = threadIdx.x; d < a.D; d += blockDim.x) {
    float sl = 0, sa = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const float* pc = part + c * (a.D + 2);
      if (pc[a.D + 1] == 0) continue;
      const float f = expf(pc[a.D] - gm);
      sl += pc[a.D + 1] * f;
      sa += pc[d] * f;
    }
    static_cast<T*>(a.y)[bh * a.D + d] = from_f<T>(sa / sl);
  }
}

template <typename T>
int decode_attention_t(const DecodeAttnArgs& a) {
  const int64_t chunks = decode_attn_chunks(a.capacity);
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  const dim3 grid(unsigned(a.B * a.heads), unsigned(chunks));
  switch (a.D / 32) {
    case 1: decode_attn_kernel<T, 1><<<grid, ATTN_WARPS * 32, 0, s>>>(a); break;
    case 2: decode_attn_kernel<T, 2><<<grid, ATTN_WARPS * 32, 0, s>>>(a); break;
    case 4: decode_attn_kernel<T, 4><<<grid, ATTN_WARPS * 32, 0, s>>>(a); break;
    case 8: decode_attn_kernel<T, 8><<<grid, ATTN_WARPS * 32, 0, s>>>(a); break;
    default: return int(cudaErrorInvalidValue);
  }
  if (chunks > 1) decode_attn_combine<T><<<unsigned(a.B * a.heads), 128, 0, s>>>(a, chunks);
  return int(cudaGetLastError());
}

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int grid_for(int64_t work, int threads) {
  return int(std::min<int64_t>((work + threads - 1) / threads, 65535 * 8));
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
  const int threads = int(std::min<int64_t>(NORM_THREADS, std::max<int64_t>(32, (a.cols / (wide ? 4 : 1) + 31) / 32 * 32)));
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  return by_width(wide, [&](auto v) {
    constexpr int V = decltype(v)::value;
    if (res)
      a.gemma ? rms_norm_kernel<T, V, true, true><<<unsigned(a.rows), threads, 0, s>>>(a)
              : rms_norm_kernel<T, V, true, false><<<unsigned(a.rows), threads, 0, s>>>(a);
    else
      a.gemma ? rms_norm_kernel<T, V, false, true><<<unsigned(a.rows), threads, 0, s>>>(a)
              : rms_norm_kernel<T, V, false, false><<<unsigned(a.rows), threads, 0, s>>>(a);
    return int(cudaGetLastError());
  });
}

template <typename T>
int silu_mul_t(const SiluMulArgs& a) {
  const int vb = 4 * int(sizeof(T));
  const bool wide = a.cols % 4 == 0 && a.gs % 4 == 0 && a.us % 4 == 0 && aligned(a.g, vb) && aligned(a.u, vb) &&
                    aligned(a.y, vb);
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  return by_width(wide, [&](auto v) {
    constexpr int V = decltype(v)::value;
    silu_mul_kernel<T, V><<<grid_for(a.rows * a.cols / V, 256), 256, 0, s>>>(a);
    return int(cudaGetLastError());
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
    rope_kernel<decltype(t)><<<grid_for(pairs, 256), 256, 0, s>>>(a);
    return int(cudaGetLastError());
  });
}

int launch_silu_mul(const SiluMulArgs& a) {
  if (a.rows <= 0 || a.cols <= 0) return 0;
  return by_dtype(a.dtype, [&](auto t) { return silu_mul_t<decltype(t)>(a); });
}

int launch_decode_attention(const DecodeAttnArgs& a) {
  if (a.B <= 0 || a.heads <= 0) return 0;
  const int64_t e = a.D / 32, chunks = decode_attn_chunks(a.capacity);
  if (a.kv_heads <= 0 || a.heads % a.kv_heads != 0 || a.D % 32 != 0 || (e != 1 && e != 2 && e != 4 && e != 8) ||
      a.capacity <= 0 || !a.pos || (chunks > 1 && !a.partial) || a.B * a.heads > 0x7fffffff || chunks > 65535)
    return int(cudaErrorInvalidValue);
  return by_dtype(a.dtype, [&](auto t) { return decode_attention_t<decltype(t)>(a); });
}

const char* layer_kernel_error_string(int err) { return cudaGetErrorString(cudaError_t(err)); }

}  // namespace patchllm
