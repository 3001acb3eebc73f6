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

#include "ops/device_info.cuh"
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

// ---- Decode attention (flash-decoding; semantics in layer_kernels.h) ----
// Memory-bound: per step a row reads its filled K and V once. A CTA of 4 warps takes G query heads of one kv head
// over `chunk` slots. Each lane loads 16 bytes (8 elements) of a key row, so a key is LPK = D / 8 lanes and a warp
// load covers KPL = 32 / LPK consecutive keys; every lane has U such loads per round and the next round's in flight
// (the session-19 dev kernels kept about one row in flight per warp and reached 15–48% of HBM bandwidth; this one
// 47–90% where there are enough CTAs, docs/BENCHMARKS.md §4 session 26). Scores go to shared memory, then a softmax
// over the chunk, then the V pass with the same load pattern.
constexpr int ATTN_WARPS = 4, ATTN_THREADS = ATTN_WARPS * 32, ATTN_MAX_CHUNK = 1024, ATTN_CHUNK_STEP = 128;
// Loads per lane per round (fewer with 8 heads: their scores take the registers) and the keys a round covers.
constexpr int attn_loads_per_lane(int G) { return G >= 8 ? 4 : 8; }
constexpr int attn_keys_per_round(int D, int G) { return ATTN_WARPS * (32 / (D / 8)) * attn_loads_per_lane(G); }

__device__ __forceinline__ void unpack8(const uint4& r, float (&f)[8], __nv_bfloat16) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(p[i]);
    f[2 * i] = t.x, f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ void unpack8(const uint4& r, float (&f)[8], __half) {
  const __half2* p = reinterpret_cast<const __half2*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __half22float2(p[i]);
    f[2 * i] = t.x, f[2 * i + 1] = t.y;
  }
}

// Sum of N values over the O·2 lanes of an xor group (O a power of two), leaving each lane a share of the sums:
// every step sends the half of the values the partner keeps and adds the half it keeps (N/2 shuffles instead of N),
// so v[i] then holds the sum of value rs_index<N, O>(lane) + i; once one value is left, plain xor-adds finish it.
template <int N, int O>
__device__ __forceinline__ void reduce_scatter(float* v, int lane) {
  if constexpr (O >= 1) {
    if constexpr (N >= 2) {
      const bool up = (lane & O) != 0;
#pragma unroll
      for (int i = 0; i < N / 2; ++i) {
        const float send = up ? v[i] : v[i + N / 2], keep = up ? v[i + N / 2] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
      }
      reduce_scatter<N / 2, O / 2>(v, lane);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
      reduce_scatter<1, O / 2>(v, lane);
    }
  }
}
template <int N, int O>
__device__ __forceinline__ int rs_index(int lane) {
  if constexpr (O >= 1 && N >= 2)
    return ((lane & O) ? N / 2 : 0) + rs_index<N / 2, O / 2>(lane);
  else
    return 0;
}

template <int G>
__device__ __forceinline__ float* attn_stats(float* sm, int chunk, int D) {  // m[G], l[G] after the scores / sums
  return sm + max(G * chunk, ATTN_WARPS * G * D);
}

template <typename T, int D, int G>
__global__ void __launch_bounds__(ATTN_THREADS) decode_attn_kernel(DecodeAttnArgs a, int chunk, int groups) {
  pdl_launch_dependents();
  pdl_grid_dependency_wait();
  constexpr int LPK = D / 8, KPL = 32 / LPK, U = attn_loads_per_lane(G), KPR = attn_keys_per_round(D, G), N = U * G;
  constexpr int NF = N >= LPK ? N / LPK : 1;  // reduced scores per lane
  extern __shared__ float sm[];
  float* sc = sm;  // [G][chunk] scores, then probabilities; afterwards [WARPS][G][D] partial outputs
  float* stat = attn_stats<G>(sm, chunk, D);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, sub = lane / LPK, li = lane % LPK;
  const int64_t gz = blockIdx.x % groups, bk = blockIdx.x / groups, b = bk / a.Hk, kvh = bk % a.Hk;
  const int64_t per_kv = a.H / a.Hk, h0 = kvh * per_kv + gz * G;
  const int nh = int(min(int64_t(G), per_kv - gz * G));
  const int64_t pos = *a.pos;
  int64_t lo = a.pad ? a.pad[b] : 0;
  if (a.window > 0) lo = max(lo, pos - a.window + 1);
  const int64_t c0 = int64_t(blockIdx.y) * chunk;
  const int64_t first = max(lo, c0), last = min(min(pos, a.span - 1), c0 + chunk - 1);
  const int nch = int(gridDim.y);
  T* y = static_cast<T*>(a.y);
  float* part = a.workspace;  // [B·H][nch][D + 2]: unnormalised sums, then max and sum of the chunk
  auto part_at = [&](int gi) { return part + ((b * a.H + h0 + gi) * nch + blockIdx.y) * (D + 2); };
  if (first > last) {  // no visible slot here
    for (int i = threadIdx.x; i < nh * D; i += ATTN_THREADS) {
      const int gi = i / D, d = i % D;
      if (nch == 1) {
        y[(b * a.H + h0 + gi) * D + d] = from_f<T>(0.f);
      } else if (d == 0) {
        part_at(gi)[D] = -INFINITY;
        part_at(gi)[D + 1] = 0.f;
      }
    }
    return;
  }
  const int jlo = int(first - c0), n = int(last - c0 + 1), rounds = (n + KPR - 1) / KPR;
  float q[G][8];
#pragma unroll
  for (int gi = 0; gi < G; ++gi) {
    if (gi < nh) {
      const uint4 r = *reinterpret_cast<const uint4*>(static_cast<const T*>(a.q) + (b * a.H + h0 + gi) * D + li * 8);
      unpack8(r, q[gi], T{});
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[gi][e] = 0.f;
    }
  }
  const int64_t row0 = ((b * a.Hk + kvh) * a.capacity + c0) * D + li * 8;
  const T* kb = static_cast<const T*>(a.k_cache) + row0;
  const T* vb = static_cast<const T*>(a.v_cache) + row0;
  auto key_of = [&](int r, int u) { return r * KPR + (warp * U + u) * KPL + sub; };
  // One round ahead: round r + 1's loads (k, then v's first round after the last k round, landing during the
  // softmax) are issued before round r is computed, so about 2·U loads per lane are in flight. (The dev harness
  // builds it without, -DPATCHLLM_ATTN_NO_PREFETCH, to compare.)
#ifdef PATCHLLM_ATTN_NO_PREFETCH
  constexpr bool ahead = false;
#else
  constexpr bool ahead = true;
#endif
  uint4 next[U];
  auto issue = [&](const T* base, int r) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = key_of(r, u);
      next[u] = make_uint4(0, 0, 0, 0);
      if (j >= jlo && j < n) next[u] = __ldg(reinterpret_cast<const uint4*>(base + int64_t(j) * D));
    }
  };
  if (ahead) issue(kb, 0);
  // Scores.
  for (int r = 0; r < rounds; ++r) {
    if (!ahead) issue(kb, r);
    uint4 kr[U];
#pragma unroll
    for (int u = 0; u < U; ++u) kr[u] = next[u];
    if (ahead) {
      if (r + 1 < rounds)
        issue(kb, r + 1);
      else
        issue(vb, 0);
    }
    float v[N];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[8];
      unpack8(kr[u], kf, T{});
#pragma unroll
      for (int gi = 0; gi < G; ++gi) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(q[gi][e], kf[e], d);
        v[u * G + gi] = d;
      }
    }
    reduce_scatter<N, LPK / 2>(v, li);
    const bool owner = N >= LPK || (li & (LPK / N - 1)) == 0;
    const int base = rs_index<N, LPK / 2>(li);
#pragma unroll
    for (int i = 0; i < NF; ++i) {
      const int idx = base + i, u = idx / G, gi = idx % G, j = key_of(r, u);
      float s = v[i] * a.scale;
      if (a.softcap > 0.f) s = a.softcap * tanhf(s / a.softcap);
      if (owner) sc[gi * chunk + j] = j >= jlo && j < n ? s : -INFINITY;
    }
  }
  __syncthreads();
  // Softmax per head over the chunk (one warp per head).
  const int nr = rounds * KPR;
  for (int gi = warp; gi < nh; gi += ATTN_WARPS) {
    float m = -INFINITY;
    for (int j = lane; j < nr; j += 32) m = fmaxf(m, sc[gi * chunk + j]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float l = 0.f;
    for (int j = lane; j < nr; j += 32) {
      const float s = sc[gi * chunk + j], p = s == -INFINITY ? 0.f : __expf(s - m);
      sc[gi * chunk + j] = p;
      l += p;
    }
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (lane == 0) stat[gi] = m, stat[G + gi] = l;
  }
  __syncthreads();
  // Weighted sum of v: each lane its 8 elements over its keys, then over the warp's KPL keys and the warps.
  float acc[G][8];
#pragma unroll
  for (int gi = 0; gi < G; ++gi)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[gi][e] = 0.f;
  for (int r = 0; r < rounds; ++r) {
    if (!ahead) issue(vb, r);
    uint4 vr[U];
#pragma unroll
    for (int u = 0; u < U; ++u) vr[u] = next[u];
    if (ahead && r + 1 < rounds) issue(vb, r + 1);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float vf[8];
      unpack8(vr[u], vf, T{});
      const int j = key_of(r, u);
#pragma unroll
      for (int gi = 0; gi < G; ++gi) {
        const float p = sc[gi * chunk + j];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[gi][e] = fmaf(p, vf[e], acc[gi][e]);
      }
    }
  }
#pragma unroll
  for (int o = LPK; o < 32; o <<= 1)
#pragma unroll
    for (int gi = 0; gi < G; ++gi)
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[gi][e] += __shfl_xor_sync(0xffffffffu, acc[gi][e], o);
  __syncthreads();  // the probabilities are read; their space takes the warps' sums
  float* red = sm;
  if (sub == 0)
#pragma unroll
    for (int gi = 0; gi < G; ++gi)
#pragma unroll
      for (int e = 0; e < 8; ++e) red[(warp * G + gi) * D + li * 8 + e] = acc[gi][e];
  __syncthreads();
  for (int i = threadIdx.x; i < nh * D; i += ATTN_THREADS) {
    const int gi = i / D, d = i % D;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; ++w) s += red[(w * G + gi) * D + d];
    if (nch == 1) {
      y[(b * a.H + h0 + gi) * D + d] = from_f<T>(s / stat[G + gi]);
    } else {
      float* pc = part_at(gi);
      pc[d] = s;
      if (d == 0) pc[D] = stat[gi], pc[D + 1] = stat[G + gi];
    }
  }
}

// One CTA per (row, query head): the chunks' partial softmaxes rescaled to the largest maximum and summed.
template <typename T>
__global__ void decode_attn_combine_kernel(DecodeAttnArgs a, int nch) {
  pdl_launch_dependents();
  pdl_grid_dependency_wait();
  const int64_t bh = blockIdx.x, D = a.D;
  const float* p = a.workspace + bh * nch * (D + 2);
  float m = -INFINITY;
  for (int c = 0; c < nch; ++c)
    if (p[c * (D + 2) + D + 1] > 0.f) m = fmaxf(m, p[c * (D + 2) + D]);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float l = 0.f, s = 0.f;
    for (int c = 0; c < nch; ++c) {
      const float* pc = p + c * (D + 2);
      if (pc[D + 1] == 0.f) continue;
      const float f = __expf(pc[D] - m);
      l += pc[D + 1] * f;
      s += pc[d] * f;
    }
    static_cast<T*>(a.y)[bh * D + d] = from_f<T>(l > 0.f ? s / l : 0.f);
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
int launch(void (*kernel)(P...), dim3 grid, unsigned block, unsigned smem, cudaStream_t s, bool pdl, A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = smem;
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
    return launch(k, unsigned(a.rows), unsigned(threads), 0, s, a.pdl, a);
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
    return launch(silu_mul_kernel<T, V>, unsigned(grid_for(a.rows * a.cols / V, 256)), 256, 0, s, a.pdl, a);
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

// Query heads per CTA: the group of a kv head, up to 8 (larger groups take several CTAs).
int attn_heads_per_cta(int64_t per_kv) { return per_kv >= 5 ? 8 : per_kv >= 3 ? 4 : int(per_kv); }

int sm_count() {
  const int n = device_info().sms;
  return n > 0 ? n : 132;  // no device (host-side rules, tests on the CPU): an H100's
}

template <typename T, int D, int G>
int decode_attention_tdg(const DecodeAttnArgs& a, int chunk, int groups, int nch) {
  const size_t smem = (size_t(std::max(G * chunk, ATTN_WARPS * G * D)) + 2 * G) * sizeof(float);
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  const dim3 grid(unsigned(a.B * a.Hk * groups), unsigned(nch));
  int err = launch(decode_attn_kernel<T, D, G>, grid, ATTN_THREADS, unsigned(smem), s, a.pdl, a, chunk, groups);
  if (err == 0 && nch > 1)
    err = launch(decode_attn_combine_kernel<T>, unsigned(a.B * a.H), unsigned(std::min<int64_t>(D, 256)), 0, s, a.pdl,
                 a, nch);
  return err;
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
    return launch(rope_kernel<decltype(t)>, unsigned(grid_for(pairs, 256)), 256, 0, s, a.pdl, a);
  });
}

int launch_silu_mul(const SiluMulArgs& a) {
  if (a.rows <= 0 || a.cols <= 0) return 0;
  return by_dtype(a.dtype, [&](auto t) { return silu_mul_t<decltype(t)>(a); });
}

bool decode_attention_supported(const DecodeAttnArgs& a) {
  const int64_t g = a.heads_per_cta;
  if (!((a.dtype == LAYER_BF16 || a.dtype == LAYER_F16) && (a.D == 64 || a.D == 128 || a.D == 256) && a.B > 0 &&
        a.Hk > 0 && a.H % a.Hk == 0 && a.span > 0 && a.span <= a.capacity && (g == 0 || g == 1 || g == 2 || g == 4 ||
        g == 8) && (a.span + ATTN_MAX_CHUNK - 1) / ATTN_MAX_CHUNK <= 65535 && a.B * a.H <= 0x7fffffff))
    return false;
  // A chunk holds whole rounds of keys: the scores of a round go to the chunk's rows of shared memory.
  return a.chunk == 0 || (a.chunk > 0 && a.chunk <= ATTN_MAX_CHUNK && a.chunk % 64 == 0 &&
                          a.chunk % decode_attention_keys_per_round(a) == 0);
}

// The group's query heads per CTA (up to 8), halved while even chunks of 128 slots would leave fewer than two CTAs per
// SM. A CTA's time is mostly its chain of load rounds, so with few CTAs more of them (each reading k/v again, from L2
// after the first) beat fewer with more heads each. Session 27's sweep (H100, every heads / chunk pair,
// docs/benchmarks/data/decode_attn_s27_heads_sweep_h100.txt): batch 1, 8 kv heads of 4, 2048 slots 16.6 -> 15.5 µs,
// 80 slots 6.9 -> 5.3; Qwen2.5-0.5B (2 kv heads of 7) 14.7 -> 12.0; batch 16 and long contexts keep the group.
int64_t decode_attention_heads(const DecodeAttnArgs& a) {
  if (a.heads_per_cta > 0) return a.heads_per_cta;
  const int64_t per_kv = a.Hk > 0 ? a.H / a.Hk : 1;
  const int64_t chunks = std::max<int64_t>(1, (a.span + ATTN_CHUNK_STEP - 1) / ATTN_CHUNK_STEP);
  int64_t G = attn_heads_per_cta(per_kv);
  while (G > 1 && a.B * a.Hk * ((per_kv + G - 1) / G) * chunks < 2 * sm_count()) G /= 2;
  return G;
}

int64_t decode_attention_keys_per_round(const DecodeAttnArgs& a) {
  const int64_t G = decode_attention_heads(a);
  return (a.D == 64 || a.D == 128 || a.D == 256) && G >= 1 && G <= 8 ? attn_keys_per_round(int(a.D), int(G)) : 0;
}

// One chunk (no combine launch) up to 256 slots; longer spans in chunks of 128, 256, 512 or 1024 slots, the smallest
// that gives about two CTAs per SM with decode_attention_heads' heads per CTA. Of the chunks timed on the H100 in
// session 26 (docs/benchmarks/data/decode_attn_s26_h100.txt: batch 1 and 16, 32 and 8 kv heads, 2K and 8K slots, D 64
// and 256), this picks the fastest or one within 3% of it; e.g. batch 1, 8 kv heads, 8K slots: 28 µs in chunks of 256
// against 39 in chunks of 128 (four CTAs per SM).
int64_t decode_attention_chunk(const DecodeAttnArgs& a) {
  if (a.chunk > 0) return a.chunk;
  if (a.span <= 2 * ATTN_CHUNK_STEP) return (a.span + ATTN_CHUNK_STEP - 1) / ATTN_CHUNK_STEP * ATTN_CHUNK_STEP;
  const int64_t per_kv = a.Hk > 0 ? a.H / a.Hk : 1, G = decode_attention_heads(a);
  const int64_t ctas = std::max<int64_t>(1, a.B * a.Hk * ((per_kv + G - 1) / G));
  const int64_t want = std::max<int64_t>(1, (2 * sm_count() + ctas - 1) / ctas);  // chunks per CTA column
  int64_t c = ATTN_CHUNK_STEP;  // 128, 256, 512 or 1024: the smallest that covers span / want
  while (c < ATTN_MAX_CHUNK && c * want < a.span) c *= 2;
  return c;
}

int64_t decode_attention_workspace(const DecodeAttnArgs& a) {
  const int64_t c = decode_attention_chunk(a), nch = (a.span + c - 1) / c;
  return nch > 1 ? a.B * a.H * nch * (a.D + 2) : 0;
}

int launch_decode_attention(const DecodeAttnArgs& a) {
  if (!decode_attention_supported(a) || !a.q || !a.k_cache || !a.v_cache || !a.pos || !a.y)
    return int(cudaErrorInvalidValue);
  if (!aligned(a.q, 16) || !aligned(a.k_cache, 16) || !aligned(a.v_cache, 16)) return int(cudaErrorInvalidValue);
  const int chunk = int(decode_attention_chunk(a));
  const int64_t nch = (a.span + chunk - 1) / chunk;
  if (nch > 65535 || (nch > 1 && !a.workspace)) return int(cudaErrorInvalidValue);
  const int64_t per_kv = a.H / a.Hk;
  const int G = int(decode_attention_heads(a)), groups = int((per_kv + G - 1) / G);
  auto by_g = [&](auto t, auto d) {
    using T = decltype(t);
    constexpr int D = decltype(d)::value;
    switch (G) {
      case 1: return decode_attention_tdg<T, D, 1>(a, chunk, groups, int(nch));
      case 2: return decode_attention_tdg<T, D, 2>(a, chunk, groups, int(nch));
      case 4: return decode_attention_tdg<T, D, 4>(a, chunk, groups, int(nch));
      default: return decode_attention_tdg<T, D, 8>(a, chunk, groups, int(nch));
    }
  };
  auto by_d = [&](auto t) {
    switch (a.D) {
      case 64: return by_g(t, std::integral_constant<int, 64>{});
      case 128: return by_g(t, std::integral_constant<int, 128>{});
      default: return by_g(t, std::integral_constant<int, 256>{});
    }
  };
  return a.dtype == LAYER_BF16 ? by_d(__nv_bfloat16{}) : by_d(__half{});
}

int layer_kernels_sm_count() { return sm_count(); }

const char* layer_kernel_error_string(int err) { return cudaGetErrorString(cudaError_t(err)); }

}  // namespace patchllm
