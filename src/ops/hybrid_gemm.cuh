// Hybrid dense / 2:4 GEMM kernel, shared by src/ops/hybrid_gemm.cu (production) and dev/kernels/hybrid_gemm.cu.
// y[M, N] = x[M, K] · W[N, K]ᵀ, W packed by hybrid_format.h with 128×128 tiles, x/y bf16 or fp16, fp32 accumulate.
//
// Math: "swap AB". The weight is the MMA A operand (16 rows per warp), tokens are n (8 per n-tile), so one
// accumulator set serves both tile kinds: mma.sync m16n8k16 for dense units, mma.sp::ordered_metadata m16n8k32 for
// 2:4 units (PTX: the D fragments are identical). The packed blob already holds each lane's A registers, so a warp
// reads its 16-row fragment unit with 16-byte shared loads and never shuffles.
//
// Work partitioning: the unit of work is half a tile (128 rows × 64 K, one contiguous 16 KB dense / 9 KB sparse blob).
// Units are ordered [token chunk][row-block][k-tile][half]. A persistent grid of G CTAs splits that sequence into G
// contiguous ranges of equal *bytes* (a dense unit costs 1.78× a sparse one): owner(L) = prefix_bytes(L)·G / total,
// so every SM streams the same weight bytes whatever the tile mix (Marlin/stream-K style striping). A CTA keeps fp32
// accumulators while it stays in one row-block; a row-block it covers whole is written straight to y. A row-block
// split between CTAs (only a CTA's first and last segments can be) goes through fp32 slots in the workspace; the
// last contributor (counter per row-block) sums the slots in CTA order (deterministic), writes y and resets the counter.
//
// Pipeline: warp 8 is the producer: one cp.async.bulk per weight unit (L2 evict_first: read once) and 16-byte
// cp.async pieces of the matching x slice from its 32 lanes, all completing on a full mbarrier per stage; warps 0..7 consume and release the stage on
// an empty mbarrier. STAGES × 16 KB in flight per SM covers HBM latency (Little: ~23 KB per SM at 3 TB/s).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/hybrid_format.h"
#include "ops/pdl.cuh"

namespace patchllm {
namespace hg {

constexpr int TILE = 128;                       // PATCH tile (rows and K) the kernel accepts
constexpr int UNIT_K = 64;                      // K of one work unit (one k64 slab of a tile)
constexpr int CONSUMERS = 8;                    // consumer warps; warp w owns rows 16w..16w+15 of a row-block
constexpr int THREADS = (CONSUMERS + 1) * 32;   // + one producer warp
constexpr int XS_STRIDE = UNIT_K + 8;           // 16-bit elements per x row in smem: 144 B puts the 8 rows of an
                                                // ldmatrix on distinct bank groups
constexpr int DENSE_UNIT = CONSUMERS * HYBRID_DENSE_UNIT_BYTES;    // 16384 B
constexpr int SPARSE_UNIT = CONSUMERS * HYBRID_SPARSE_UNIT_BYTES;  // 9216 B
constexpr int SLOT_FLOATS = TILE * TILE;        // one split row-block partial: [128 tokens][128 rows] fp32
constexpr int MAX_KEYS = 1 << 16;               // counters (chunk, row-block) per launch; the launcher splits M above
constexpr int MAX_CONTRIB = 512;                // contributors to one row-block <= its units = 2·K/128 (K <= 32768)
constexpr int64_t WS_COUNTER_BYTES = int64_t(MAX_KEYS) * 4;  // fixed place, so counters stay zero whatever M is

// What the parameters of every hybrid kernel (this one, hybrid_decode.cuh, hybrid_prefill.cuh) share: the output,
// the shape and the packed weight (hybrid_format.h).
struct PackedGemm {
  uint16_t* y;             // [M, N]
  int M, N, K;
  const uint8_t* blob;
  const uint8_t* kinds;    // [RB * CT]
  const int64_t* offsets;  // [RB * CT + 1]
  int RB, CT;              // row-blocks, k-tiles
};

struct Params : PackedGemm {
  const uint16_t* x;      // [M, K]
  int nchunks;            // token chunks of MT
  float* slots;           // [G][2][SLOT_FLOATS]
  int* counters;          // [nchunks * RB] <= MAX_KEYS, zero between launches
  int64_t* ranges;        // [G][2] unit range of each CTA, written at kernel start
};

template <int NT>
struct Config {
  static constexpr int MT = NT * 8;                                  // tokens per chunk
  static constexpr int XS_BYTES = MT * XS_STRIDE * 2;                // x slice of one stage
  static constexpr int STAGE_BYTES = DENSE_UNIT + XS_BYTES;
  static constexpr int STAGES = NT <= 8 ? 8 : 6;                     // ≤ ~210 KB of the 227 KB per SM
  static constexpr int SMEM = STAGES * STAGE_BYTES + 2 * STAGES * 8 + 16;
};

// ---- PTX wrappers ---------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
// mbarrier: arrival count + transaction bytes; the Hopper way to wait for bulk copies.
__device__ __forceinline__ void mbar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(b)) : "memory");
}
// try_wait (sm_90) suspends the thread until the phase flips or a timeout; test_wait (sm_80, for the decode kernel's
// Ampere build) only polls.
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  uint32_t ok = 0;
  while (!ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    asm volatile("{ .reg .pred p; mbarrier.test_wait.parity.shared.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(ok)
                 : "r"(smem_addr(b)), "r"(parity)
                 : "memory");
#else
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(ok)
        : "r"(smem_addr(b)), "r"(parity)
        : "memory");
#endif
  }
}
// Weights are read once: evict them first so x, slots and counters stay in L2.
__device__ __forceinline__ uint64_t policy_evict_first() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}
// 1-D bulk copy global -> shared, completing bytes on an mbarrier (no tensor map needed for contiguous blobs).
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t pol) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::
          "r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(pol)
      : "memory");
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
// 16-byte async copy global -> shared (LDGSTS): x rows are 128 B pieces, far too small for the bulk-copy engine
// (one bulk copy per token row per unit made M >= 16 launch-issue bound: 5 µs per unit at M = 128, measured).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
// Arrive on an mbarrier once this thread's earlier cp.async copies land (.noinc: counted in the init count).
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t* b) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(b)) : "memory");
}
// Four 8×8 16-bit matrices: rows = tokens, 8 K each -> B fragments (k = 2t, 2t+1; n = g) of two k16 steps.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// Dense 16×8×16 step: a = this lane's 4 A registers (packed order), b = 2 B registers.
template <bool BF16>
__device__ __forceinline__ void mma_dense(float (&d)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  if constexpr (BF16)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}
// 2:4 16×8×32 step: a = 8 kept values, b = 4 B registers (two k16 halves), meta word shared by selectors 0 and 1.
template <bool BF16, int SEL>
__device__ __forceinline__ void mma_sp(float (&d)[4], const uint4& a, const uint32_t (&b)[4], uint32_t meta) {
  if constexpr (BF16)
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, %13;"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(meta),
                   "n"(SEL));
  else
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, %13;"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(meta),
                   "n"(SEL));
}
// Programmatic dependent launch (ops/pdl.cuh): launch_dependents lets the next grid be scheduled, and
// grid_dependency_wait returns once the previous grid has completed and its writes are visible.
using patchllm::pdl_grid_dependency_wait;
using patchllm::pdl_launch_dependents;
// Thread-block cluster barrier (sm_90): every thread of every CTA of the cluster arrives and waits. The acq_rel form
// publishes this CTA's shared-memory writes to the cluster (ptxas emits a GPU-scope MEMBAR for its release); the
// relaxed form orders nothing, enough where a CTA only has to outlive its peers' finished reads of its memory.
__device__ __forceinline__ void cluster_sync_acq_rel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_sync_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, 256;" ::: "memory"); }

template <bool BF16>
__device__ __forceinline__ uint16_t to_half_bits(float v) {
  if constexpr (BF16) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    return *reinterpret_cast<uint16_t*>(&h);
  } else {
    __half h = __float2half_rn(v);
    return *reinterpret_cast<uint16_t*>(&h);
  }
}

// ---- schedule ---------------------------------------------------------------------------------------------------
// Unit L = chunk·U + u, u = 2·tile + half; prefix bytes give a byte-balanced owner CTA in O(1).
struct Schedule {
  int64_t U, LU;        // units per chunk, all units
  int64_t chunk_bytes;  // weight bytes of one chunk (= total blob)
  int G;
  const uint8_t* kinds;
  const int64_t* offsets;
  __device__ int64_t prefix(int64_t L) const {
    int64_t c = L / U, u = L - c * U, t = u >> 1;
    int64_t half = (u & 1) ? (__ldg(kinds + t) ? SPARSE_UNIT : DENSE_UNIT) : 0;
    return c * chunk_bytes + __ldg(offsets + t) + half;
  }
  __device__ int owner(int64_t L) const {
    if (L >= LU) return G;
    return int((unsigned long long)prefix(L) * (unsigned long long)G /
               (unsigned long long)(chunk_bytes * (LU / U)));
  }
};

// First unit owned by CTA c and by CTA c+1, found by all THREADS threads together: each round probes THREADS
// evenly spaced units (one dependent load pair per round instead of ~20 for a serial binary search).
__device__ inline void cta_range(const Schedule& S, int c, int64_t* lo2, int64_t* hi2, int* first2, int64_t* out) {
  if (threadIdx.x < 2) {
    lo2[threadIdx.x] = 0;
    hi2[threadIdx.x] = S.LU;
    first2[threadIdx.x] = THREADS;
  }
  __syncthreads();
  for (;;) {
    const bool open0 = lo2[0] < hi2[0], open1 = lo2[1] < hi2[1];
    if (!open0 && !open1) break;
    int64_t step[2];
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int64_t lo = lo2[q], hi = hi2[q];
      step[q] = (hi - lo + THREADS - 1) / THREADS;
      if (lo < hi) {
        const int64_t pr = lo + (threadIdx.x + 1) * step[q] - 1;
        if (pr >= hi || S.owner(pr) >= c + q) atomicMin(&first2[q], int(threadIdx.x));
      }
    }
    __syncthreads();
    if (threadIdx.x < 2) {
      const int q = threadIdx.x, i = first2[q];
      const int64_t lo = lo2[q], hi = hi2[q];
      if (lo < hi) {
        if (i == THREADS) lo2[q] = hi;  // every probe below c: the answer is hi (known owner >= c, or LU)
        else {
          hi2[q] = min(hi, lo + (i + 1) * step[q] - 1);
          lo2[q] = lo + i * step[q];
        }
      }
      first2[q] = THREADS;
    }
    __syncthreads();
  }
  out[0] = lo2[0];
  out[1] = lo2[1];
}

template <int NT, bool BF16>
__global__ void __launch_bounds__(THREADS, 1) hybrid_gemm_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // bulk copies and mbarrier transactions are sm_90; the launcher never selects this kernel on sm_8x
#else
  using C = Config<NT>;
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* wbuf = smem;                                                  // [STAGES][DENSE_UNIT]
  uint16_t* xbuf = reinterpret_cast<uint16_t*>(smem + C::STAGES * DENSE_UNIT);  // [STAGES][MT][XS_STRIDE]
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + C::STAGES * C::STAGE_BYTES);
  uint64_t* empty = full + C::STAGES;
  volatile int* flag = reinterpret_cast<volatile int*>(empty + C::STAGES);
  __shared__ int64_t srch_lo[2], srch_hi[2];
  __shared__ int srch_first[2];
  __shared__ int contrib[MAX_CONTRIB];
  __shared__ int ncontrib;  // (CTA << 1 | slot) of the contributors to a split row-block

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  Schedule S;
  S.U = int64_t(p.RB) * p.CT * 2;
  S.LU = S.U * p.nchunks;
  S.chunk_bytes = p.offsets[int64_t(p.RB) * p.CT];
  S.G = gridDim.x;
  S.kinds = p.kinds;
  S.offsets = p.offsets;
  int64_t range[2];
  cta_range(S, blockIdx.x, srch_lo, srch_hi, srch_first, range);
  const int64_t Lb = range[0], Le = range[1];
  if (Lb >= Le) return;
  if (threadIdx.x == 0) {  // published for the last contributor of a split row-block (read after our atomicAdd)
    p.ranges[2 * blockIdx.x] = Lb;
    p.ranges[2 * blockIdx.x + 1] = Le;
  }

  // Stale x rows (tokens ≥ M, K beyond the edge) must be finite: zero the x ring once.
  for (int i = threadIdx.x; i < C::STAGES * C::MT * XS_STRIDE / 8; i += THREADS)
    reinterpret_cast<uint4*>(xbuf)[i] = make_uint4(0, 0, 0, 0);
  if (threadIdx.x == 0) {
    for (int s = 0; s < C::STAGES; ++s) {
      mbar_init(&full[s], 1 + 32);  // producer lane 0 (expect_tx) + 32 lanes' cp.async arrivals
      mbar_init(&empty[s], CONSUMERS);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // zeroed x visible to the bulk-copy engine
  __syncthreads();

  if (warp == CONSUMERS) {  // ---- producer warp ----
    const uint64_t pol = policy_evict_first();
    for (int64_t L = Lb, i = 0; L < Le; ++L, ++i) {
      const int s = int(i % C::STAGES);
      if (i >= C::STAGES) mbar_wait(&empty[s], uint32_t((i / C::STAGES) & 1) ^ 1u);
      const int64_t chunk = L / S.U, u = L - chunk * S.U, t = u >> 1;
      const int h = int(u & 1);
      const bool sparse = __ldg(p.kinds + t) != 0;
      const uint32_t wbytes = sparse ? SPARSE_UNIT : DENSE_UNIT;
      const int k0 = int(t % p.CT) * TILE + h * UNIT_K;
      const int klen = min(UNIT_K, p.K - k0);
      const int tok0 = int(chunk) * C::MT, ntok = min(C::MT, p.M - tok0);
      if (lane == 0) {
        mbar_expect_tx(&full[s], wbytes);
        bulk_copy(wbuf + s * DENSE_UNIT, p.blob + __ldg(p.offsets + t) + h * wbytes, wbytes, &full[s], pol);
      }
      // x slice: ntok rows × klen/8 pieces of 16 B, spread over the warp (K % 8 == 0, so no partial piece).
      const int per_row = klen > 0 ? klen / 8 : 0;
      uint16_t* xd = xbuf + s * C::MT * XS_STRIDE;
      const uint16_t* xsrc = p.x + int64_t(tok0) * p.K + k0;
      for (int q = lane; q < ntok * per_row; q += 32) {
        const int r = q / per_row, c = q - r * per_row;
        cp_async16(xd + r * XS_STRIDE + c * 8, xsrc + int64_t(r) * p.K + c * 8);
      }
      cp_async_mbar_arrive(&full[s]);
    }
    asm volatile("cp.async.wait_all;" ::: "memory");  // no copy outlives its issuing thread
    return;
  }

  // ---- consumer warps ----
  const int g = lane >> 2, tq = lane & 3;
  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  const int64_t U_rb = int64_t(p.CT) * 2;
  auto key_of = [&](int64_t L) { return L / U_rb; };  // chunk·RB + row-block (units of a row-block are contiguous)
  int64_t seg_start = Lb, key = key_of(Lb);

  // Write (or hand over) the accumulators of row-block `key` covering units [seg_start, seg_end).
  auto flush = [&](int64_t seg_end) {
    const int64_t chunk = key / p.RB, rb = key - chunk * p.RB;
    const int tok0 = int(chunk) * C::MT;
    const int64_t done = seg_end - seg_start;
    if (done == U_rb) {  // whole row-block here: straight to y
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = int(rb) * TILE + warp * 16 + g + 8 * (e >> 1), tok = tok0 + n * 8 + 2 * tq + (e & 1);
          if (row < p.N && tok < p.M) p.y[int64_t(tok) * p.N + row] = to_half_bits<BF16>(acc[n][e]);
        }
      return;
    }
    const int slot = seg_start == Lb ? 0 : 1;  // a CTA's first segment uses slot 0, its last slot 1
    float* sl = p.slots + (int64_t(blockIdx.x) * 2 + slot) * SLOT_FLOATS;
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        sl[(n * 8 + 2 * tq + (e & 1)) * TILE + warp * 16 + g + 8 * (e >> 1)] = acc[n][e];
    __threadfence();
    consumer_sync();
    if (threadIdx.x == 0) {
      const int old = atomicAdd(p.counters + key, int(done));
      const int last = int64_t(old) + done == U_rb;
      if (last) p.counters[key] = 0;  // clean for the next launch
      __threadfence();
      *flag = last;
    }
    consumer_sync();
    if (*flag) {  // last contributor: list the contributing CTAs from their published ranges, sum in CTA order
      const int64_t L0 = key * U_rb, L1 = L0 + U_rb - 1;
      if (threadIdx.x == 0) {
        int n = 0;
        for (int64_t L = L0; L <= L1 && n < MAX_CONTRIB;) {
          const int c = S.owner(L);
          const int64_t cb = __ldcg(p.ranges + 2 * c), ce = __ldcg(p.ranges + 2 * c + 1);
          contrib[n++] = (c << 1) | (L == cb ? 0 : 1);  // slot 0 iff this is the CTA's first segment
          L = ce;
        }
        ncontrib = n;
      }
      consumer_sync();
      const int n = ncontrib;
      for (int idx = threadIdx.x; idx < C::MT * TILE; idx += CONSUMERS * 32) {
        const int tl = idx / TILE, r = idx % TILE, tok = tok0 + tl, row = int(rb) * TILE + r;
        if (tok >= p.M || row >= p.N) continue;
        float sum = 0.f;
        for (int j = 0; j < n; ++j) sum += __ldcg(p.slots + int64_t(contrib[j]) * SLOT_FLOATS + idx);
        p.y[int64_t(tok) * p.N + row] = to_half_bits<BF16>(sum);
      }
    }
  };

  for (int64_t L = Lb, i = 0; L < Le; ++L, ++i) {
    const int s = int(i % C::STAGES);
    mbar_wait(&full[s], uint32_t((i / C::STAGES) & 1));
    const int64_t t = (L % S.U) >> 1;
    const bool sparse = __ldg(p.kinds + t) != 0;
    const uint8_t* wu = wbuf + s * DENSE_UNIT;
    const uint16_t* xs = xbuf + s * C::MT * XS_STRIDE + (lane & 7) * XS_STRIDE + (lane >> 3) * 8;
    if (!sparse) {
      const uint4* a4 = reinterpret_cast<const uint4*>(wu + warp * HYBRID_DENSE_UNIT_BYTES);
      uint4 a[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) a[j] = a4[j * 32 + lane];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint32_t b[2][4];
        ldmatrix_x4(b[0], xs + n * 8 * XS_STRIDE);       // K 0..31 of the unit
        ldmatrix_x4(b[1], xs + n * 8 * XS_STRIDE + 32);  // K 32..63
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_dense<BF16>(acc[n], a[j], b[j >> 1][2 * (j & 1)], b[j >> 1][2 * (j & 1) + 1]);
      }
    } else {
      const uint8_t* su = wu + warp * HYBRID_SPARSE_UNIT_BYTES;
      const uint4* a4 = reinterpret_cast<const uint4*>(su);
      const uint4 a0 = a4[lane], a1 = a4[32 + lane];
      const uint32_t meta = reinterpret_cast<const uint32_t*>(su + HYBRID_SPARSE_VALUE_BYTES)[lane];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint32_t b[2][4];
        ldmatrix_x4(b[0], xs + n * 8 * XS_STRIDE);
        ldmatrix_x4(b[1], xs + n * 8 * XS_STRIDE + 32);
        mma_sp<BF16, 0>(acc[n], a0, b[0], meta);
        mma_sp<BF16, 1>(acc[n], a1, b[1], meta);
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
    const int64_t next = L + 1;
    if (next == Le || key_of(next) != key) {
      flush(next);
#pragma unroll
      for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
      seg_start = next;
      key = key_of(next);
    }
  }
#endif
}

}  // namespace hg
}  // namespace patchllm
