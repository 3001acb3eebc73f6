// Split-K hybrid dense / 2:4 GEMM for decode (M ≤ 128), shared by src/ops/hybrid_gemm.cu and dev/kernels.
// y[M, N] = x[M, K] · W[N, K]ᵀ, W packed by hybrid_format.h (128×128 tiles, format v1, unchanged).
//
// Why a second kernel: the persistent bulk-copy kernel (hybrid_gemm.cuh) paid a fixed ~0.7–0.9 µs per work unit
// whatever its bytes (dependent index loads before every copy, one producer warp per SM, 1 CTA per SM) plus a per-CTA
// schedule search, so decode streamed 1.2–2.5 TB/s. Here there is no producer, no shared-memory ring, no schedule:
//   grid = (S k-splits, RB row-blocks, token chunks of 64); CTA (s, rb, z) = 8 warps, warp w owns rows 16w..16w+15 of
//   row-block rb over k-tiles [s·KPC, (s+1)·KPC). Each warp reads its fragment units straight from global memory into
//   registers (16-byte coalesced loads, 512 B per warp instruction, L2 evict-first), KB k-tiles (2·KB units) per
//   batch, all loads of a batch issued before any MMA, so 8–16 KB per warp and ≥ 64 KB per SM are in flight.
//   The kinds/offsets of 32 k-tiles come in one coalesced load per warp (one k-tile per lane) and are broadcast with
//   __shfl_sync, so no load of the index sits between two weight batches.
//   x (tokens are the MMA n) is staged per batch in shared memory by 16-byte cp.async (issued after the weight loads,
//   so its L2 latency hides under theirs) and read as B fragments by ldmatrix, the same two ldmatrix.x4 per n-tile
//   for a dense unit (4 × m16n8k16) and a 2:4 unit (2 × m16n8k32). (v3a read x with 32-bit global loads per lane:
//   fine at M = 1, but at M = 16 that is 16 scattered loads per unit per lane and M = 16 ran 0.6–0.8× cuBLAS.)
// Reduction over the S k-splits: every CTA writes its fp32 [tokens][128 rows] partial to the workspace; the last CTA
// of (z, rb) (atomic counter, reset by that CTA) sums the S partials in split order (deterministic) and writes y,
// four rows per thread with the S loads in flight together (v3d; v3b's serial per-element sum was an M-scaled tail).
// S = 1 writes y directly.
// Cluster reduction (v3g, sm_90, Params::cluster; HybridGemmArgs::decode_reduction, the default since session 19 where
// the launcher's plan picks it): the S CTAs of a (chunk, row-block) are one thread-block cluster.
// Each writes its partial to its own shared memory; after a cluster barrier CTA s sums slice s of the tile from all
// S partials through distributed shared memory, in split order (the same fp32 sums as the workspace path, so the
// same bits), and writes y; a second barrier keeps every partial alive until read. No workspace store, fence,
// counter or L2 round trip: at M = 16 the workspace reduction cost ~5 µs of 35 on 12288×4096 (H200, 2026-12-04:
// the kernel with the reduction removed ran 29.7 µs; tools/ops_gpu_decode_diag.sh).
// Programmatic dependent launch (HybridGemmArgs::pdl, sm_90): the CTA lets the next grid be scheduled at once, and
// loads its index and first weight batch before waiting for the previous grid; x, y, the partials and the counters
// are touched only after that wait. Weights and index are read-only for the launch's lifetime, so back-to-back
// linears overlap one kernel's tail (last wave, split reduction) with the next one's first HBM round trip.
// v3i (session 24, hybrid_decode_v3i_kernel below): the same batches with two in flight per warp (the next batch's
// loads issued before this one's x wait and MMAs); the 4-warp row split's kernel, and at 9..16 tokens the k-split's
// where its one-CTA-per-SM plan is one nearly full wave. With one batch in flight a warp idles HBM for a round trip
// per batch, and that, not the MMAs or the x staging, bounded decode at M = 16 (dev/kernels/stream_probe.cu).
#pragma once
#include <cooperative_groups.h>

#include "ops/hybrid_gemm.cuh"

namespace patchllm {
namespace hd {

constexpr int WARPS = 8;
constexpr int THREADS = WARPS * 32;
constexpr int CHUNK_TOKENS = 64;                                  // tokens per grid.z chunk
constexpr int PART_FLOATS = CHUNK_TOKENS * hg::TILE;              // one partial slot: [64 tokens][128 rows] fp32
constexpr int64_t PART_BYTES = int64_t(PART_FLOATS) * 4;
constexpr int PSTRIDE = hg::TILE + 4;  // fp32 partial row in smem: the 4 token pairs of a store hit distinct banks
constexpr int MAX_CLUSTER = 8;         // portable cluster size: the cluster reduction's largest S

struct Params : hg::PackedGemm {
  const uint16_t* x;       // [M, K]
  int S, KPC;              // k-splits, k-tiles per split
  float* part;             // [nchunks][RB][S][PART_FLOATS]
  int* counters;           // [nchunks * RB], zero between launches
  int cluster = 0;         // 1: launched as clusters of (S, 1, 1), partials summed through distributed shared memory
};

// Four summed rows row .. row + 3 of token tok into y (both reductions' last step), rows past N skipped.
template <bool BF16>
__device__ __forceinline__ void store_y4(const Params& p, int tok, int row, const float4& sum) {
  uint16_t* yr = p.y + int64_t(tok) * p.N + row;
  if (row < p.N) yr[0] = hg::to_half_bits<BF16>(sum.x);
  if (row + 1 < p.N) yr[1] = hg::to_half_bits<BF16>(sum.y);
  if (row + 2 < p.N) yr[2] = hg::to_half_bits<BF16>(sum.z);
  if (row + 3 < p.N) yr[3] = hg::to_half_bits<BF16>(sum.w);
}

__device__ __forceinline__ uint4 ld_stream16(const void* p, uint64_t pol) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p), "l"(pol));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream4(const void* p, uint64_t pol) {
  uint32_t v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.u32 %0, [%1], %2;" : "=r"(v) : "l"(p), "l"(pol));
  return v;
}

// x slice, tokens [tok0, tok0 + MT) × K [c·128, c·128 + xw), into xs (row stride XSTRIDE) and visible to the whole
// CTA: 16-byte cp.async pieces (src size 0 = zero fill for tokens ≥ mc and K past the edge). Called after the batch's
// weight loads are issued, so that its L2 latency hides under theirs.
// issue_x: the copies only (this thread's pieces, not waited for); stage_x: copies, wait, CTA barrier.
template <int MT, int XSTRIDE, int NTHREADS>
__device__ __forceinline__ void issue_x(uint16_t* xs, const Params& p, int c, int xw, int tok0, int mc) {
  const int pieces = MT * xw / 8, per_row = xw / 8;
  for (int q = threadIdx.x; q < pieces; q += NTHREADS) {
    const int r = q / per_row, col = (q - r * per_row) * 8, k = c * hg::TILE + col;
    const bool ok = r < mc && k < p.K;
    const uint16_t* src = ok ? p.x + int64_t(tok0 + r) * p.K + k : p.x;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(hg::smem_addr(xs + r * XSTRIDE + col)),
                 "l"(src), "r"(ok ? 16 : 0)
                 : "memory");
  }
}
template <int MT, int XSTRIDE, int NTHREADS>
__device__ __forceinline__ void stage_x(uint16_t* xs, const Params& p, int c, int xw, int tok0, int mc) {
  issue_x<MT, XSTRIDE, NTHREADS>(xs, p, c, xw, tok0, mc);
  asm volatile("cp.async.wait_all;" ::: "memory");
  __syncthreads();
}

// One 2:4 fragment unit at u (this warp's part of a 64-K half tile): the lane's two A registers and its metadata.
__device__ __forceinline__ void load_sparse_unit(const uint8_t* u, int lane, uint64_t pol, uint4& a0, uint4& a1,
                                                 uint32_t& meta) {
  a0 = ld_stream16(u + lane * 16, pol);
  a1 = ld_stream16(u + 512 + lane * 16, pol);
  meta = ld_stream4(u + HYBRID_SPARSE_VALUE_BYTES + lane * 4, pol);
}

// What a CTA of W warps works on, and this thread's place in it: k-split s (W = 8; 0 for the row split), row block
// rb, token chunk z (tokens tok0 … tok0 + mc), k-tiles [ct0, ct1), the row block's first index entry tbase, and the
// thread's 16-row warp slice (its fragment units and output rows) and lane.
template <int W>
struct CtaWork {
  int s, rb, z, warp, lane, ct0, ct1, tok0, mc;
  int64_t tbase;
  __device__ __forceinline__ explicit CtaWork(const Params& p)
      : s(W == WARPS ? blockIdx.x : 0),
        rb(blockIdx.y),
        z(blockIdx.z),
        warp((W == WARPS ? 0 : blockIdx.x * W) + (threadIdx.x >> 5)),
        lane(threadIdx.x & 31),
        ct0(s * p.KPC),
        ct1(min(p.CT, ct0 + p.KPC)),
        tok0(z * CHUNK_TOKENS),
        mc(min(CHUNK_TOKENS, p.M - tok0)),
        tbase(int64_t(rb) * p.CT) {}
};

// The kernel's end, shared by v3e and v3i: y straight from the accumulators (S = 1 or the row split), or the S
// k-splits' partials summed through the cluster (v3g) or the workspace (last CTA of the row block), in split order.
// smem: at least MT × PSTRIDE fp32 (the cluster partial), free once every warp is past its last x read.
template <int NT, int W, bool BF16>
__device__ __forceinline__ void store_or_reduce(const Params& p, const float (&acc)[NT][4], unsigned char* smem,
                                                const CtaWork<W>& cw) {
  const int s = cw.s, rb = cw.rb, z = cw.z, tok0 = cw.tok0, mc = cw.mc, warp = cw.warp;
  const int g = cw.lane >> 2, tq = cw.lane & 3;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (W == WARPS && p.cluster) {
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    float* ps = reinterpret_cast<float*>(smem);
    __syncthreads();  // every warp is done reading the x slice that the partial overwrites
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = warp * 16 + g + 8 * (e >> 1), tl = n * 8 + 2 * tq + (e & 1);
        if (tl < mc) ps[tl * PSTRIDE + r] = acc[n][e];
      }
    hg::cluster_sync_acq_rel();  // all S partials of the cluster written and visible
    // CTA s sums float4 groups [s·per, (s+1)·per) of the mc × 128 tile, the S partials in split order.
    const int groups = mc * (hg::TILE / 4), per = (groups + p.S - 1) / p.S, me = int(cl.block_rank());
    for (int i4 = me * per + threadIdx.x; i4 < min(groups, (me + 1) * per); i4 += W * 32) {
      const int tl = i4 / (hg::TILE / 4), r = (i4 - tl * (hg::TILE / 4)) * 4, row = rb * hg::TILE + r;
      float4* mine = reinterpret_cast<float4*>(ps + tl * PSTRIDE + r);
      float4 v[MAX_CLUSTER];
#pragma unroll
      for (int j = 0; j < MAX_CLUSTER; ++j)  // all S loads in flight, then summed in order
        if (j < p.S) v[j] = *cl.map_shared_rank(mine, j);
      float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int j = 0; j < MAX_CLUSTER; ++j)
        if (j < p.S) sum.x += v[j].x, sum.y += v[j].y, sum.z += v[j].z, sum.w += v[j].w;
      store_y4<BF16>(p, tok0 + tl, row, sum);
    }
    // No CTA leaves while a peer may still read its partial. Relaxed: this CTA's reads of its peers have returned
    // (their values are in the stores above), and a release would make every thread wait for its y stores.
    hg::cluster_sync_relaxed();
    return;
  }
#endif
  // D fragment: rows (weights) g, g+8 of the warp's 16; columns (tokens) 2t, 2t+1 of each n-tile.
  if (W < WARPS || p.S == 1) {
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = rb * hg::TILE + warp * 16 + g + 8 * (e >> 1), tl = n * 8 + 2 * tq + (e & 1);
        if (row < p.N && tl < mc) p.y[int64_t(tok0 + tl) * p.N + row] = hg::to_half_bits<BF16>(acc[n][e]);
      }
    return;
  }
  const int64_t key = int64_t(z) * p.RB + rb;
  float* base = p.part + key * p.S * PART_FLOATS;
  float* sl = base + int64_t(s) * PART_FLOATS;
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = warp * 16 + g + 8 * (e >> 1), tl = n * 8 + 2 * tq + (e & 1);
      if (tl < mc) __stcg(sl + tl * hg::TILE + r, acc[n][e]);
    }
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) {
    const int old = atomicAdd(p.counters + key, 1);
    last = old == p.S - 1;
    if (last) p.counters[key] = 0;  // clean for the next launch
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // Four rows per thread (float4) and the S loads of a group issued together (unrolled), still summed in split order:
  // v3b summed one element per iteration over S dependent L2 round trips, mc·128/256·S of them in a row per thread
  // (48 at M = 16, S = 6), a serial tail on the last CTA of every row-block that grew with the tokens.
  const float4* base4 = reinterpret_cast<const float4*>(base);
  for (int i4 = threadIdx.x; i4 < mc * hg::TILE / 4; i4 += THREADS) {
    float4 v[4];
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int j0 = 0; j0 < p.S; j0 += 4) {
      const int nj = min(4, p.S - j0);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (j < nj) v[j] = __ldcg(base4 + int64_t(j0 + j) * (PART_FLOATS / 4) + i4);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (j < nj) sum.x += v[j].x, sum.y += v[j].y, sum.z += v[j].z, sum.w += v[j].w;
    }
    const int idx = i4 * 4, tl = idx / hg::TILE, r = idx - tl * hg::TILE, row = rb * hg::TILE + r;
    store_y4<BF16>(p, tok0 + tl, row, sum);
  }
}

// One load batch: KB k-tiles of either kind, or (RUN4, KB = 2 only) a run of four 2:4 k-tiles in the registers of
// two dense ones.
template <int KB, bool RUN4>
struct LoadBatch {
  static_assert(!RUN4 || KB == 2, "RUN4 packs four 2:4 k-tiles into the registers of two dense ones");
  uint4 a[KB][2][4];                // A registers [k-tile][half][4]; a run of four puts tile j at [j/2][h][2(j%2)..+1]
  uint32_t meta[RUN4 ? 4 : KB][2];  // 2:4 metadata [k-tile][half]
  int c, n;                         // first k-tile and k-tiles of the batch; n = 0: no batch
  bool run4;                        // a run of four (x covers 4 k-tiles), else up to KB k-tiles
  uint32_t sp;                      // bit b set = k-tile c + b is 2:4
  __device__ __forceinline__ int x_width() const { return (run4 ? 4 : KB) * hg::TILE; }  // K of its x slice
};
struct IndexWindow {    // kinds and offsets of 32 k-tiles, one per lane, and which of them are 2:4
  int kind = 0;
  int64_t off = 0;
  uint32_t sparse = 0;
};

// Issues the weight loads of the batch starting at k-tile c of the CTA's range [ct0, ct1) (c - ct0 a multiple of KB).
// KB divides 32, so a batch never straddles two index windows.
template <int KB, bool RUN4, int W>
__device__ __forceinline__ void load_batch(LoadBatch<KB, RUN4>& b, int c, const CtaWork<W>& cw, const Params& p,
                                           uint64_t pol, IndexWindow& w) {
  const int ct0 = cw.ct0, ct1 = cw.ct1, warp = cw.warp, lane = cw.lane;
  const int64_t tbase = cw.tbase;
  b.c = c, b.n = 0, b.run4 = false, b.sp = 0;
  if (c >= ct1) return;
  const int i = (c - ct0) & 31;
  if (i == 0) {  // the next 32 k-tiles' index: one per lane
    const int ct = c + lane;
    if (ct < ct1) w.kind = __ldg(p.kinds + tbase + ct), w.off = __ldg(p.offsets + tbase + ct);
    if (RUN4) w.sparse = __ballot_sync(0xffffffffu, ct < ct1 && w.kind != 0);
  }
  if (RUN4 && i <= 28 && ((w.sparse >> i) & 0xFu) == 0xFu) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t off = __shfl_sync(0xffffffffu, w.off, i + j);
#pragma unroll
      for (int h = 0; h < 2; ++h)
        load_sparse_unit(p.blob + off + h * hg::SPARSE_UNIT + warp * HYBRID_SPARSE_UNIT_BYTES, lane, pol,
                         b.a[(j >> 1) % KB][h][2 * (j & 1)], b.a[(j >> 1) % KB][h][2 * (j & 1) + 1],
                         b.meta[j % (RUN4 ? 4 : KB)][h]);
    }
    b.n = 4, b.run4 = true;
    return;
  }
#pragma unroll
  for (int k = 0; k < KB; ++k) {
    const int kind = __shfl_sync(0xffffffffu, w.kind, i + k);
    const int64_t off = __shfl_sync(0xffffffffu, w.off, i + k);
    if (c + k < ct1) {
      const uint8_t* base = p.blob + off;
      if (kind != 0) {
        b.sp |= 1u << k;
#pragma unroll
        for (int h = 0; h < 2; ++h)
          load_sparse_unit(base + h * hg::SPARSE_UNIT + warp * HYBRID_SPARSE_UNIT_BYTES, lane, pol, b.a[k][h][0],
                           b.a[k][h][1], b.meta[k][h]);
      } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint8_t* u = base + h * hg::DENSE_UNIT + warp * HYBRID_DENSE_UNIT_BYTES;
#pragma unroll
          for (int j = 0; j < 4; ++j) b.a[k][h][j] = ld_stream16(u + j * 512 + lane * 16, pol);
        }
      }
    }
  }
  b.n = min(KB, ct1 - c);
}

// One 64-K half tile into acc: per n-tile the x fragments of the half (two ldmatrix.x4 at xk, row stride XSTRIDE),
// then the unit's MMAs, 2:4 (a0, a1 and the metadata word) or dense (a0 … a3).
template <int NT, int XSTRIDE, bool BF16>
__device__ __forceinline__ void mma_half(float (&acc)[NT][4], const uint16_t* xk, bool sparse, uint32_t meta,
                                         const uint4& a0, const uint4& a1, const uint4& a2, const uint4& a3) {
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    uint32_t bx[2][4];  // bx[q][i] = x[token 8n + g][32q + 8i + 2t, +1] of the half
    hg::ldmatrix_x4(bx[0], xk + n * 8 * XSTRIDE);
    hg::ldmatrix_x4(bx[1], xk + n * 8 * XSTRIDE + 32);
    if (sparse) {
      hg::mma_sp<BF16, 0>(acc[n], a0, bx[0], meta);
      hg::mma_sp<BF16, 1>(acc[n], a1, bx[1], meta);
    } else {
      hg::mma_dense<BF16>(acc[n], a0, bx[0][0], bx[0][1]);
      hg::mma_dense<BF16>(acc[n], a1, bx[0][2], bx[0][3]);
      hg::mma_dense<BF16>(acc[n], a2, bx[1][0], bx[1][1]);
      hg::mma_dense<BF16>(acc[n], a3, bx[1][2], bx[1][3]);
    }
  }
}

// The batch's MMAs; xl = this lane's ldmatrix address in the batch's x slice (row stride XSTRIDE).
template <int NT, int XSTRIDE, bool BF16, int KB, bool RUN4>
__device__ __forceinline__ void mma_batch(float (&acc)[NT][4], const LoadBatch<KB, RUN4>& b, const uint16_t* xl) {
  if (RUN4 && b.run4) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4& a0 = b.a[(j >> 1) % KB][h][2 * (j & 1)];
        const uint4& a1 = b.a[(j >> 1) % KB][h][2 * (j & 1) + 1];
        mma_half<NT, XSTRIDE, BF16>(acc, xl + (2 * j + h) * hg::UNIT_K, true, b.meta[j % (RUN4 ? 4 : KB)][h], a0, a1,
                                    a0, a1);
      }
    return;
  }
#pragma unroll
  for (int k = 0; k < KB; ++k) {
    if (k >= b.n) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h)
      mma_half<NT, XSTRIDE, BF16>(acc, xl + (2 * k + h) * hg::UNIT_K, (b.sp >> k) & 1u, b.meta[k][h], b.a[k][h][0],
                                  b.a[k][h][1], b.a[k][h][2], b.a[k][h][3]);
  }
}

// NT n-tiles of 8 tokens (NT·8 ≤ 64), KB k-tiles per load batch.
// RUN4 (v3e, KB = 2 only; the default at M ≤ 16): four 2:4 k-tiles in a row are one batch (4 × 72 B per lane, about a
// dense batch's 2 × 128 B), so a 2:4 stream gets as many bytes per memory round trip as a dense one. Why: ncu on the
// H200 (12288×4096, M = 1) showed one batch per round trip, 3.1 TB/s for dense batches (8 KB per warp) and 2.5 TB/s
// at f = 0.9 (2:4 batches 4.6 KB per warp); docs/benchmarks/kernels.md. Measured (H200, 2026-12-04): +2–9% at f ≥ 0.9,
// ±1% at f ≤ 0.5. (v3f, x staged once per CTA with no per-batch barrier, gained nothing and was removed.)
// W (v3h): warps per CTA. W = 8 (WARPS) is the k-split kernel above. W < 8 splits a row block's 16-row warp slices
// over 8/W CTAs (blockIdx.x) instead of splitting K: every CTA covers the whole K, S = 1, no reduction of any kind.
// Why: at M = 16 the k-split's workspace reduction cost ~5 µs of 35 on 12288×4096 (H200), and row blocks with many
// rows have warps enough in flight without a k-split; smaller CTAs spread those warps over every SM.
template <int NT, int KB, bool BF16, bool RUN4 = false, int W = WARPS>
__global__ void __launch_bounds__(W * 32, 2 * WARPS / W) hybrid_decode_kernel(const Params p) {
  static_assert(!RUN4 || KB == 2, "RUN4 packs four 2:4 k-tiles into the registers of two dense ones");
  static_assert(W == 2 || W == 4 || W == WARPS, "a row block's 8 warp slices in 8/W CTAs");
  const CtaWork<W> cw(p);
  const uint64_t pol = hg::policy_evict_first();
  hg::pdl_launch_dependents();

  // x slice of a batch (MT tokens × KB·128 K) in shared memory, rows ≥ mc and K beyond the edge zero-filled;
  // B fragments by ldmatrix (row stride KB·128 + 8 elements: the 8 rows of an 8×8 matrix hit distinct bank groups).
  constexpr int MT = NT * 8, XWMAX = (RUN4 ? 4 : KB) * hg::TILE, XSTRIDE = XWMAX + 8;
  // The cluster reduction's fp32 partial [MT][PSTRIDE] reuses the x slice's shared memory after the k loop.
  constexpr int SMEM = MT * XSTRIDE * 2 > MT * PSTRIDE * 4 ? MT * XSTRIDE * 2 : MT * PSTRIDE * 4;
  __shared__ __align__(16) unsigned char smem[SMEM];
  uint16_t* xs = reinterpret_cast<uint16_t*>(smem);
  const uint16_t* xl = xs + (cw.lane & 7) * XSTRIDE + (cw.lane >> 3) * 8;

  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  IndexWindow w;
  LoadBatch<KB, RUN4> b;
  for (int c = cw.ct0; c < cw.ct1; c += b.n) {
    if (c != cw.ct0) __syncthreads();  // every warp is done with the previous batch's x slice
    load_batch(b, c, cw, p, pol, w);
    if (c == cw.ct0) hg::pdl_grid_dependency_wait();  // x comes from the previous kernel
    stage_x<MT, XSTRIDE, W * 32>(xs, p, c, b.x_width(), cw.tok0, cw.mc);
    mma_batch<NT, XSTRIDE, BF16>(acc, b, xl);
  }

  hg::pdl_grid_dependency_wait();  // already passed unless the k-range was empty; before any write
  store_or_reduce<NT, W, BF16>(p, acc, smem, cw);
}

// ---- v3i: v3h with two load batches in flight per warp (session 24) -------------------------------------------
// v3h (the row split: a row block's eight warp slices in 2 CTAs of 4 warps, each over the whole K, no reduction)
// issues a batch's weight loads only after the previous batch's MMAs, so each warp has one batch in flight. v3i issues
// batch i+1's loads before batch i's x wait and MMAs, and copies batch i+1's x slice into a second buffer right after
// batch i's barrier. Why: dev/kernels/stream_probe.cu on the H100 (61 MB read once, 768 warps in 192 CTAs of 4, loads
// and an XOR only): 8 KB batches one at a time per warp stream 2.23 TB/s, two in flight 2.67, a grid-stride read 2.65;
// v3h at M = 16, f = 0.9 on 12288×4096 streamed 2.22 TB/s. v3i: 1.41× → 1.52× cuBLAS there (session 24,
// docs/benchmarks/kernels.md). Per warp the MMAs are v3h's in the same order, so the results are the same bits (dev
// grid -13, twin -30).
constexpr int V3I_WARPS = 4;
// W = 4: the row split, grid (2, RB, token chunks), S = 1, KPC = CT (the launcher's v3h setup). W = 8: the k-split
// kernel's grid, split and reductions (store_or_reduce) with two batches in flight; the launcher takes it at 9..16
// tokens where decode_pipelined_k_split_auto says so, and everywhere at M ≤ 16 with decode_variant 3.
// NT n-tiles of 8 tokens. Two batches take ~205 registers: two CTAs of 4 warps or one of 8 per SM (launch bound).
template <int NT, bool BF16, int W = V3I_WARPS>
__global__ void __launch_bounds__(W * 32, W == WARPS ? 1 : 2) hybrid_decode_v3i_kernel(const Params p) {
  static_assert(W == V3I_WARPS || W == WARPS, "the row split over 4-warp CTAs, or the k-split");
  constexpr int MT = NT * 8, XW = 4 * hg::TILE, XSTRIDE = XW + 8;
  static_assert(2 * MT * XSTRIDE * 2 >= MT * PSTRIDE * 4, "the cluster partial reuses the x slices");
  const CtaWork<W> cw(p);
  const uint64_t pol = hg::policy_evict_first();
  hg::pdl_launch_dependents();
  __shared__ __align__(16) uint16_t xs[2][MT * XSTRIDE];  // x slices of the batch in MMA and the next one
  // x landed in xs[j]: every thread's cp.async pieces, counted by cp.async.mbarrier.arrive. Not cp.async.wait_all:
  // a first v3i with it ran at 0.85-0.93x v3h on the H100 (session 24), most likely because its scoreboard wait also
  // covered the next batch's weight loads (one batch in flight again; not confirmed in that version's SASS).
  __shared__ __align__(8) uint64_t xbar[2];
  if (threadIdx.x == 0) hg::mbar_init(&xbar[0], W * 32), hg::mbar_init(&xbar[1], W * 32);
  __syncthreads();
  uint32_t xphase = 0;  // bit j: parity of xbar[j]'s next phase
  const int lofs = (cw.lane & 7) * XSTRIDE + (cw.lane >> 3) * 8;
  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  IndexWindow w;
  LoadBatch<2, true> b0, b1;
  // One step: batch `cur` (x in xc) waits for its x, then next's x slice goes into xn (free: every warp passed this
  // barrier after the MMAs of the batch before cur, the last reader of xn), then cur's MMAs.
  auto step = [&](const LoadBatch<2, true>& cur, int jc, const LoadBatch<2, true>& next) {
    hg::mbar_wait(&xbar[jc], (xphase >> jc) & 1u);
    xphase ^= 1u << jc;
    __syncthreads();
    if (next.n) {
      issue_x<MT, XSTRIDE, W * 32>(xs[jc ^ 1], p, next.c, next.x_width(), cw.tok0, cw.mc);
      hg::cp_async_mbar_arrive(&xbar[jc ^ 1]);
    }
    mma_batch<NT, XSTRIDE, BF16>(acc, cur, xs[jc] + lofs);
  };
  load_batch(b0, cw.ct0, cw, p, pol, w);
  hg::pdl_grid_dependency_wait();  // x comes from the previous kernel; the first weights are already on their way
  issue_x<MT, XSTRIDE, W * 32>(xs[0], p, cw.ct0, b0.x_width(), cw.tok0, cw.mc);
  hg::cp_async_mbar_arrive(&xbar[0]);
  int c = cw.ct0 + b0.n;
  for (;;) {
    load_batch(b1, c, cw, p, pol, w);
    c += b1.n;
    step(b0, 0, b1);
    if (b1.n == 0) break;
    load_batch(b0, c, cw, p, pol, w);
    c += b0.n;
    step(b1, 1, b0);
    if (b0.n == 0) break;
  }
  store_or_reduce<NT, W, BF16>(p, acc, reinterpret_cast<unsigned char*>(&xs[0][0]), cw);
}

}  // namespace hd
}  // namespace patchllm
