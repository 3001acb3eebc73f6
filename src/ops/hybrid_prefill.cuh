// Hopper prefill kernel (v4) of the hybrid dense / 2:4 GEMM, shared by src/ops/hybrid_gemm.cu and dev/kernels.
// y[M, N] = x[M, K] · W[N, K]ᵀ, W packed by hybrid_format.h (128×128 tiles, format v1, unchanged).
//
// Why: at M ≥ ~256 the GEMM is compute-bound, and the mma.sync/mma.sp kernels top out at ~650 / ~970 TF-eff on
// H100 (docs: kernels.md §1.1), far below cuBLAS (wgmma). Only wgmma + wgmma.sp reach the tensor cores' full rate.
//
// Math: "swap AB" as in the other kernels. The weight is the wgmma A operand taken from registers (RS form): each warp
// of a consumer warpgroup owns 16 weight rows, and the packed fragment units already hold each lane's A registers
// in the m16n8k16 / m16n8k32 order, which is also the per-warp A-register order of wgmma m64nNk16 / wgmma.sp
// m64nNk32. Tokens are the wgmma N (BN = 128 or 256 per CTA), taken from shared memory through a matrix descriptor
// (K-major, 128-byte swizzle). A dense 64-K slab is 4 × wgmma k16, a 2:4 slab 2 × wgmma.sp k32 (sparsity selector
// 0 / 1 picks the metadata lanes, as in mma.sp), all into the same fp32 accumulators.
//
// CTA = 3 warpgroups: WG0 produces (one thread: per 64-K slab one TMA 2-D load of the x box [BN tokens × 64 K],
// zero-filled past M and K, plus one 1-D bulk copy of the 16 KB dense / 9 KB 2:4 weight slab, both completing on the
// stage's full mbarrier); WG1 and WG2 consume (rows 0–63 and 64–127 of the row-block), wait_group 1 after each slab
// (which in v4d's SASS still waits for the slab just issued; v4i, PV_BATCHED, removes that wait but gains nothing
// measurable, since the other consumer warpgroup fills the gap) and release a stage on its empty mbarrier once the
// wgmmas that read it are done. The output tile leaves through shared memory as 16-byte rows. Grid: one CTA per
// (row-block, token block) in a grouped raster order; one CTA per SM. v5 (hybrid_prefill_sk_kernel, below) runs the
// same pipeline stream-K for M where those tiles are too few for the SMs. Measured versions (v4c, v4e and v4f, which
// cut the x traffic, v4g, which loaded A from global memory, PV_PREFETCH_W and PV_MC_W, which prefetched or
// multicast the weight, all ran slower and are removed; v6, the weight as wgmma A from shared memory by descriptor,
// dev/kernels/prefill_ss.cu, gains too little for a second packed format) and what limits them:
// dev/kernels/hybrid_gemm.cu, docs/benchmarks/kernels.md, docs/BENCHMARKS.md §4.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>

#include <type_traits>

#include "ops/hybrid_gemm.cuh"
#include "ops/hybrid_split.h"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PATCHLLM_HAVE_WGMMA 1
#endif

namespace patchllm {
namespace hp {

constexpr int THREADS = 384;   // producer warpgroup + 2 consumer warpgroups
constexpr int SLAB_K = 64;     // K per pipeline stage (one packed slab, one 128-byte swizzle row of x)
constexpr int GROUP = 16;      // row-blocks per raster group

template <int BN>
struct Cfg {
  static constexpr int X_BYTES = BN * SLAB_K * 2;                // x box, 128 B per token
  static constexpr int STAGE = X_BYTES + hg::DENSE_UNIT;          // + the largest weight slab (dense, 16 KB)
  static constexpr int STAGES = BN == 256 ? 4 : 6;                // 192 KB of the 227 KB
  static constexpr int SMEM = STAGES * STAGE + 2 * STAGES * 8 + 1024;  // + barriers + alignment slack
  static constexpr int ACC = BN / 2;                              // fp32 accumulators per thread
};

struct Params : hg::PackedGemm {  // x comes through the tensor map
  // stream-K kernel, and v8's cut tail (slots: per CTA its 128 × 256 partial sums; counters: per CTA a flag)
  int TB = 1;              // 128-token blocks
  float* slots = nullptr;  // [G][2][128 × 128] fp32 partial tiles
  int* counters = nullptr; // [RB · TB] ≤ MAX_KEYS, zero between launches
  // v8 (hybrid_prefill_sorted_kernel) only: hybrid_prefill_order_raw's table
  const uint32_t* order = nullptr;
  // Dev probe (dev/kernels/prefill_timeline.cu; compiled in only with PATCHLLM_PREFILL_TIMELINE): per CTA and
  // item k < TIMELINE_UNITS, {start, end (%globaltimer ns), unit | piece << 30}, written by the first consumer
  // thread (piece: 0 whole, 1 a cut unit's head, 2 its tail).
  unsigned long long* timeline = nullptr;
};
constexpr int TIMELINE_UNITS = 64;

// Variants of the prefill kernels (template argument PV, a set of flags; 0 = v4d, the launcher's default).
// Measured on the H100 and H200 (kernels.md, "Prefill ablation", "Session 16"): PV_LEAN, PV_BATCHED and PV_W_FIRST
// move v4d by -14% … +10%, none wins across shapes, so all stay opt-in or dev-only; the probes show what would pay:
// no weight copies and no A loads after the first slabs +5–35% at f ≥ 0.9, either alone inconsistent. v4g (A
// registers straight from global memory, 0.72–0.89× v4d), PV_PREFETCH_W (the weight into L2 ahead, 0.78–1.04×) and
// PV_MC_W (weight slabs multicast in 2-CTA clusters, 0.88–0.97×) are removed.
enum PrefillVariant : int {
  PV_BASE = 0,
  PV_LEAN = 1,       // ld.shared of only the A registers a slab's kind uses (2:4: two 16-byte fragments and the
                     // metadata, not four; dense: no metadata), predicated by warp-uniform flags
  PV_BATCHED = 4,    // v4i: one wgmma group per slab (a warp-uniform branch between a dense and a 2:4 asm block, each
                     // committing its own group), so wait_group 1 leaves the slab just issued in flight
  // Timing probes for dev/kernels, with PV_LEAN; wrong results by design. After the first slabs (real data, so the
  // tensor cores' power draw stays realistic) each stops one stream of traffic to measure what it costs.
  PV_PROBE_A_ONCE = 8,   // no A ld.shared after the first two slabs
  PV_PROBE_W_ONCE = 16,  // no weight copies after the first STAGES slabs
  PV_PROBE_X_ONCE = 32,  // no x boxes after the first STAGES slabs
  PV_PROBES = PV_PROBE_A_ONCE | PV_PROBE_W_ONCE | PV_PROBE_X_ONCE,
  // Exact: the weight slab's bulk copy issued before the x box's TMA load (does it wait behind the 32 KB box?).
  PV_W_FIRST = 128,
};
constexpr bool pv_has(int pv, int flag) { return (pv & flag) != 0; }

// ---- wgmma wrappers (sm_90a) -----------------------------------------------------------------------------------
// Accumulator operand lists, written out because inline PTX needs literal operand numbers; BN 256's 128 extend BN
// 128's 64.
#define PATCHLLM_WG_R0_63 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define PATCHLLM_WG_D64 "{" PATCHLLM_WG_R0_63 "}"
#define PATCHLLM_WG_D128 "{" PATCHLLM_WG_R0_63 ", " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127" \
  "}"
#define PATCHLLM_WG_ACC64(d) \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define PATCHLLM_WG_ACC128(d) \
  PATCHLLM_WG_ACC64(d), \
  "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
  "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
  "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
  "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
  "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
  "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
  "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])

// Shared-memory matrix descriptor: K-major, 128-byte swizzle (the TMA box layout), 8-row groups 1024 B apart.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t saddr) {
  return uint64_t((saddr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
// Holds v in its register up to here: a wgmma reads its register operands (the 2:4 metadata) while it runs, until
// the wait_group that retires it, and the compiler does not know that.
__device__ __forceinline__ void keep_reg(uint32_t& v) { asm volatile("" : "+r"(v)::"memory"); }
__device__ __forceinline__ void keep_reg(uint4 (&a)[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[j].x), "+r"(a[j].y), "+r"(a[j].z), "+r"(a[j].w)::"memory");
}
// Keeps the compiler from moving accumulator reads or writes across the asynchronous wgmmas.
template <int ACC>
__device__ __forceinline__ void fence_acc(float (&d)[ACC]) {
#pragma unroll
  for (int i = 0; i < ACC; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Inputs of the wgmma blocks below, after the accumulators: the lane's 16 A registers, desc, meta.
#define PATCHLLM_WG_IN(a, desc, meta)                                                                          \
  "r"(a[0].x), "r"(a[0].y), "r"(a[0].z), "r"(a[0].w), "r"(a[1].x), "r"(a[1].y), "r"(a[1].z), "r"(a[1].w),      \
      "r"(a[2].x), "r"(a[2].y), "r"(a[2].z), "r"(a[2].w), "r"(a[3].x), "r"(a[3].y), "r"(a[3].z), "r"(a[3].w),  \
      "l"(desc), "r"(meta)
// Operand numbers: 64 (BN 128) or 128 (BN 256) accumulators first, then A, desc, meta.
#define PATCHLLM_A128 "{%64, %65, %66, %67}", "{%68, %69, %70, %71}", "{%72, %73, %74, %75}", "{%76, %77, %78, %79}"
#define PATCHLLM_A256 \
  "{%128, %129, %130, %131}", "{%132, %133, %134, %135}", "{%136, %137, %138, %139}", "{%140, %141, %142, %143}"
#define PATCHLLM_A128_2 "{%64, %65, %66, %67}", "{%68, %69, %70, %71}"
#define PATCHLLM_A256_2 "{%128, %129, %130, %131}", "{%132, %133, %134, %135}"
// (The _X forms of the block macros expand their arguments first, so one argument may stand for several A lists.)

// One 64-K slab in one asm block: 4 × wgmma k16 (dense) or 2 × wgmma.sp k32 (2:4), chosen by a predicate inside the
// block. (With a C++ branch around separate wgmma wrappers, ptxas cannot prove the branch warpgroup-uniform and
// serialises the wgmmas, warning C7520.) a[0..3] = the lane's A registers of the four k16 steps (dense) or of the two
// k32 steps in a[0], a[1] (2:4); desc = B descriptor at K offset 0 (k16 step j at +32 B, k32 step s at +64 B).
// Operands: accumulators, the 16 A registers, desc, meta, sparse (SEL).
#define PATCHLLM_WGP(N, TY, ACC, A0, A1, A2, A3, DESC, META, SEL)                                              \
  "{ .reg .pred p, ds, ss; .reg .b64 d1, d2, d3;"                                                              \
  "setp.ne.b32 p, 1, 0; setp.ne.b32 ss, " SEL ", 0; setp.eq.b32 ds, " SEL ", 0;"                               \
  "add.s64 d1, " DESC ", 2; add.s64 d2, " DESC ", 4; add.s64 d3, " DESC ", 6;"                                 \
  "@ds wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A0 ", " DESC ", p, 1, 1, 0;"     \
  "@ds wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A1 ", d1, p, 1, 1, 0;"           \
  "@ds wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A2 ", d2, p, 1, 1, 0;"           \
  "@ds wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A3 ", d3, p, 1, 1, 0;"           \
  "@ss wgmma.mma_async.sp.sync.aligned.m64n" N "k32.f32." TY "." TY " " ACC ", " A0 ", " DESC ", " META        \
  ", 0, p, 1, 1, 0;"                                                                                           \
  "@ss wgmma.mma_async.sp.sync.aligned.m64n" N "k32.f32." TY "." TY " " ACC ", " A1 ", d2, " META              \
  ", 1, p, 1, 1, 0; }"
#define PATCHLLM_WGP_X(...) PATCHLLM_WGP(__VA_ARGS__)
template <int BN, bool BF16>
__device__ __forceinline__ void wgmma_slab(float (&d)[BN / 2], const uint4 (&a)[4], uint64_t desc, uint32_t meta,
                                           uint32_t sparse) {
#ifdef PATCHLLM_HAVE_WGMMA
  if constexpr (BN == 128 && BF16)
    asm volatile(PATCHLLM_WGP_X("128", "bf16", PATCHLLM_WG_D64, PATCHLLM_A128, "%80", "%81", "%82")
                 : PATCHLLM_WG_ACC64(d) : PATCHLLM_WG_IN(a, desc, meta), "r"(sparse));
  else if constexpr (BN == 128)
    asm volatile(PATCHLLM_WGP_X("128", "f16", PATCHLLM_WG_D64, PATCHLLM_A128, "%80", "%81", "%82")
                 : PATCHLLM_WG_ACC64(d) : PATCHLLM_WG_IN(a, desc, meta), "r"(sparse));
  else if constexpr (BF16)
    asm volatile(PATCHLLM_WGP_X("256", "bf16", PATCHLLM_WG_D128, PATCHLLM_A256, "%144", "%145", "%146")
                 : PATCHLLM_WG_ACC128(d) : PATCHLLM_WG_IN(a, desc, meta), "r"(sparse));
  else
    asm volatile(PATCHLLM_WGP_X("256", "f16", PATCHLLM_WG_D128, PATCHLLM_A256, "%144", "%145", "%146")
                 : PATCHLLM_WG_ACC128(d) : PATCHLLM_WG_IN(a, desc, meta), "r"(sparse));
#else
  (void)d;
  (void)a;
  (void)desc;
  (void)meta;
  (void)sparse;
#endif
}

// v4i (PV_BATCHED): the same wgmmas as wgmma_slab, but as one group per slab. A predicated wgmma becomes a branch
// in SASS, each wgmma its own group (gsb0), and the commit after them an extra empty wgmma, so wait_group 1 after
// wgmma_slab leaves only that empty group in flight. Here a warp-uniform branch (VOTE) picks a dense or a 2:4 asm
// block, each ending in its own commit: one group per slab, gsb0 on its last wgmma, no empty one (SASS checked).
// Operands as wgmma_slab's, less `sparse`: accumulators, the 16 A registers, desc, meta.
#define PATCHLLM_WGD(N, TY, ACC, A0, A1, A2, A3, DESC)                                                         \
  "{ .reg .pred p; .reg .b64 d1, d2, d3; setp.ne.b32 p, 1, 0;"                                                 \
  "add.s64 d1, " DESC ", 2; add.s64 d2, " DESC ", 4; add.s64 d3, " DESC ", 6;"                                 \
  "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A0 ", " DESC ", p, 1, 1, 0;"         \
  "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A1 ", d1, p, 1, 1, 0;"               \
  "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A2 ", d2, p, 1, 1, 0;"               \
  "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " ACC ", " A3 ", d3, p, 1, 1, 0;"               \
  "wgmma.commit_group.sync.aligned; }"
#define PATCHLLM_WGS(N, TY, ACC, A0, A1, DESC, META)                                                           \
  "{ .reg .pred p; .reg .b64 d2; setp.ne.b32 p, 1, 0; add.s64 d2, " DESC ", 4;"                               \
  "wgmma.mma_async.sp.sync.aligned.m64n" N "k32.f32." TY "." TY " " ACC ", " A0 ", " DESC ", " META            \
  ", 0, p, 1, 1, 0;"                                                                                           \
  "wgmma.mma_async.sp.sync.aligned.m64n" N "k32.f32." TY "." TY " " ACC ", " A1 ", d2, " META ", 1, p, 1, 1, 0;" \
  "wgmma.commit_group.sync.aligned; }"
#define PATCHLLM_WGD_X(...) PATCHLLM_WGD(__VA_ARGS__)
#define PATCHLLM_WGS_X(...) PATCHLLM_WGS(__VA_ARGS__)
template <int BN, bool BF16>
__device__ __forceinline__ void wgmma_slab_group(float (&d)[BN / 2], const uint4 (&a)[4], uint64_t desc,
                                                 uint32_t meta, bool sparse) {
#ifdef PATCHLLM_HAVE_WGMMA
  if (__any_sync(0xffffffffu, sparse)) {  // the whole warp holds one tile: VOTE makes that visible to ptxas
    if constexpr (BN == 128 && BF16)
      asm volatile(PATCHLLM_WGS_X("128", "bf16", PATCHLLM_WG_D64, PATCHLLM_A128_2, "%80", "%81")
                   : PATCHLLM_WG_ACC64(d) : PATCHLLM_WG_IN(a, desc, meta));
    else if constexpr (BN == 128)
      asm volatile(PATCHLLM_WGS_X("128", "f16", PATCHLLM_WG_D64, PATCHLLM_A128_2, "%80", "%81")
                   : PATCHLLM_WG_ACC64(d) : PATCHLLM_WG_IN(a, desc, meta));
    else if constexpr (BF16)
      asm volatile(PATCHLLM_WGS_X("256", "bf16", PATCHLLM_WG_D128, PATCHLLM_A256_2, "%144", "%145")
                   : PATCHLLM_WG_ACC128(d) : PATCHLLM_WG_IN(a, desc, meta));
    else
      asm volatile(PATCHLLM_WGS_X("256", "f16", PATCHLLM_WG_D128, PATCHLLM_A256_2, "%144", "%145")
                   : PATCHLLM_WG_ACC128(d) : PATCHLLM_WG_IN(a, desc, meta));
  } else {
    if constexpr (BN == 128 && BF16)
      asm volatile(PATCHLLM_WGD_X("128", "bf16", PATCHLLM_WG_D64, PATCHLLM_A128, "%80")
                   : PATCHLLM_WG_ACC64(d) : PATCHLLM_WG_IN(a, desc, meta));
    else if constexpr (BN == 128)
      asm volatile(PATCHLLM_WGD_X("128", "f16", PATCHLLM_WG_D64, PATCHLLM_A128, "%80")
                   : PATCHLLM_WG_ACC64(d) : PATCHLLM_WG_IN(a, desc, meta));
    else if constexpr (BF16)
      asm volatile(PATCHLLM_WGD_X("256", "bf16", PATCHLLM_WG_D128, PATCHLLM_A256, "%144")
                   : PATCHLLM_WG_ACC128(d) : PATCHLLM_WG_IN(a, desc, meta));
    else
      asm volatile(PATCHLLM_WGD_X("256", "f16", PATCHLLM_WG_D128, PATCHLLM_A256, "%144")
                   : PATCHLLM_WG_ACC128(d) : PATCHLLM_WG_IN(a, desc, meta));
  }
#else
  (void)d;
  (void)a;
  (void)desc;
  (void)meta;
  (void)sparse;
#endif
}

// 2-D TMA load of box (k0, m0) of the x tensor map into shared memory, completing bytes on bar.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int k0, int m0, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::
          "r"(hg::smem_addr(dst)),
      "l"(map), "r"(k0), "r"(m0), "r"(hg::smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ uint4 lds128(const void* p) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(hg::smem_addr(p)));
  return v;
}
// Loads into v only where `on` (a warp-uniform flag), else leaves v as it was.
__device__ __forceinline__ void lds128_if(uint4& v, const void* p, bool on) {
  asm volatile("{ .reg .pred q; setp.ne.b32 q, %5, 0; @q ld.shared.v4.u32 {%0, %1, %2, %3}, [%4]; }"
               : "+r"(v.x), "+r"(v.y), "+r"(v.z), "+r"(v.w)
               : "r"(hg::smem_addr(p)), "r"(int(on)));
}
__device__ __forceinline__ void lds32_if(uint32_t& v, const void* p, bool on) {
  asm volatile("{ .reg .pred q; setp.ne.b32 q, %2, 0; @q ld.shared.u32 %0, [%1]; }"
               : "+r"(v)
               : "r"(hg::smem_addr(p)), "r"(int(on)));
}
__device__ __forceinline__ uint32_t lds32(const void* p) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(hg::smem_addr(p)));
  return v;
}

// ---- host side: the x tensor map (the launcher and dev/kernels) ----
// cuTensorMapEncodeTiled through the runtime's driver entry point, so nothing links libcuda directly.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      f = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// x as a 2-D tensor {K, M} (K innermost), box {64 K, BN tokens}, 128-byte swizzle, zero fill past M and K.
template <int BN, bool BF16>
cudaError_t encode_x_map(CUtensorMap* map, const void* x, const Params& p) {
  auto enc = tensor_map_encoder();
  if (!enc) return cudaErrorNotSupported;
  const cuuint64_t dims[2] = {cuuint64_t(p.K), cuuint64_t(p.M)};
  const cuuint64_t strides[1] = {cuuint64_t(p.K) * 2};
  const cuuint32_t box[2] = {cuuint32_t(SLAB_K), cuuint32_t(BN)};
  const cuuint32_t estr[2] = {1, 1};
  CUresult cr = enc(map, BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2,
                    const_cast<void*>(x), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                    CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return cr == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// ---- pieces shared by the tile kernel and the stream-K kernel -------------------------------------------------
// Producer: slab s (64 K) of tile t (= rb·CT + k-tile) for the token block at tok0 into one stage: the x box by TMA
// (zero-filled past M and K) and the weight slab by a bulk copy, both completing on the stage's full barrier.
// (PV: PrefillVariant; the probes skip x or the weights once every stage holds real data, slab s >= STAGES.)
template <int BN, int PV = PV_BASE, int STAGES = 0>
__device__ __forceinline__ void issue_slab(uint8_t* stage, uint64_t* full, const CUtensorMap* xmap, const Params& p,
                                           int64_t t, int s, int tok0) {
  const uint32_t wbytes = __ldg(p.kinds + t) ? hg::SPARSE_UNIT : hg::DENSE_UNIT;
  const bool skip_x = pv_has(PV, PV_PROBE_X_ONCE) && s >= STAGES;
  const bool skip_w = pv_has(PV, PV_PROBE_W_ONCE) && s >= STAGES;
  hg::mbar_expect_tx(full, (skip_x ? 0 : Cfg<BN>::X_BYTES) + (skip_w ? 0 : wbytes));
  // Default L2 policy: unlike decode, a weight slab is read again by each token block.
  auto copy_w = [&] {
    if (!skip_w)
      hg::bulk_copy(stage + Cfg<BN>::X_BYTES, p.blob + __ldg(p.offsets + t) + (s & 1) * wbytes, wbytes, full);
  };
  if constexpr (pv_has(PV, PV_W_FIRST)) copy_w();
  if (!skip_x) tma_load_2d(stage, xmap, s * SLAB_K, tok0, full);
  if constexpr (!pv_has(PV, PV_W_FIRST)) copy_w();
}

// Consumer: one slab that has landed in `stage`: this lane's A registers into a, the slab's wgmmas issued, then wait
// until only these are in flight (so the caller may release the previous slab's stage while the tensor cores work on
// this one). Callers alternate register buffers. (In v4d's SASS both buffers are the same registers, legally: there
// wait_group 1 leaves only an empty group in flight, see wgmma_slab_group. With PV_BATCHED the previous slab's
// registers pa, pm are still read until this wait, so they are held (keep_reg) up to it.)
template <int BN, bool BF16, int PV = PV_BASE>
__device__ __forceinline__ void mma_slab(float (&d)[BN / 2], uint4 (&a)[4], uint32_t& meta, uint4 (&pa)[4],
                                         uint32_t& pm, const uint8_t* stage, bool sparse, int grp, int lane,
                                         bool load = true) {
  // A loads: dense k16 step j at unit + 512 j; 2:4 k32 step s at unit + 512 s, metadata at + 1024.
  const uint8_t* unit =
      stage + Cfg<BN>::X_BYTES + grp * (sparse ? HYBRID_SPARSE_UNIT_BYTES : HYBRID_DENSE_UNIT_BYTES);
  if constexpr (!pv_has(PV, PV_LEAN | PV_PROBES)) {
    // Branch-free: the loads of the registers a slab does not use stay inside the stage buffer and are ignored.
#pragma unroll
    for (int j = 0; j < 4; ++j) a[j] = lds128(unit + j * 512 + lane * 16);
    meta = lds32(unit + HYBRID_SPARSE_VALUE_BYTES + lane * 4);
  } else {
    // Predicated (warp-uniform flags, no branch around the wgmma block): 2:4 two fragments + metadata, dense four.
    lds128_if(a[0], unit + lane * 16, load);
    lds128_if(a[1], unit + 512 + lane * 16, load);
    lds128_if(a[2], unit + 1024 + lane * 16, load && !sparse);
    lds128_if(a[3], unit + 1536 + lane * 16, load && !sparse);
    lds32_if(meta, unit + HYBRID_SPARSE_VALUE_BYTES + lane * 4, load && sparse);
  }
  fence_acc(d);
  wg_fence();
  if constexpr (pv_has(PV, PV_BATCHED)) {
    wgmma_slab_group<BN, BF16>(d, a, desc_sw128(hg::smem_addr(stage)), meta, sparse);  // commits its group
  } else {
    wgmma_slab<BN, BF16>(d, a, desc_sw128(hg::smem_addr(stage)), meta, sparse ? 1u : 0u);
    wg_commit();
  }
  wg_wait<1>();
  fence_acc(d);
  if constexpr (pv_has(PV, PV_BATCHED)) keep_reg(pa), keep_reg(pm);
}

// Epilogue through shared memory: the D fragments (d[4j + e] = row 16·w4 + g + 8·(e >> 1) of the warpgroup,
// token 8j + 2t + (e & 1)) are scattered 2-byte values along y's rows; written straight to global memory they
// half-fill every 32-byte sector. Both consumer warpgroups (named barrier 1, 256 threads) put the [BN tokens][128
// rows] tile into ot (the caller's shared buffer, free once every consumer thread arrived at the first barrier),
// then each token row leaves as 16-byte stores. c = consumer warpgroup, w4 = its warp, ctid = 0..255.
constexpr int OSTR = hg::TILE + 8;  // 272-byte rows: the 4 token columns of a store hit distinct banks
// Where fragment element i of this thread goes in the [tokens][OSTR] output tile.
__device__ __forceinline__ int ot_pos(int i, int c, int w4, int lane) {
  return (8 * (i >> 2) + 2 * (lane & 3) + (i & 1)) * OSTR + 64 * c + 16 * w4 + (lane >> 2) + 8 * ((i >> 1) & 1);
}
// Once both consumer warpgroups have written their part of ot (the barrier), each token row leaves as 16-byte stores
// (rows past N skipped; element by element where y's rows are not 16-byte aligned).
template <int BN>
__device__ __forceinline__ void store_rows(const uint16_t* ot, const Params& p, int rb, int tok0, int ctid) {
  hg::consumer_sync();
  const bool vec = (p.N & 7) == 0 && (reinterpret_cast<uintptr_t>(p.y) & 15) == 0;  // 16-byte aligned rows of y
  for (int q = ctid; q < BN * 16; q += 256) {
    const int tl = q >> 4, ch = q & 15;
    const int tok = tok0 + tl, row = rb * hg::TILE + 8 * ch;
    if (tok >= p.M || row >= p.N) continue;
    uint16_t* dst = p.y + int64_t(tok) * p.N + row;
    const uint16_t* src = ot + tl * OSTR + 8 * ch;
    if (vec) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int e = 0; e < 8 && row + e < p.N; ++e) dst[e] = src[e];
    }
  }
}
// The accumulators through ot to y. The first barrier: every consumer thread is done with ot's previous contents.
template <int BN, bool BF16>
__device__ __forceinline__ void store_tile(const float (&d)[BN / 2], uint16_t* ot, const Params& p, int rb, int tok0,
                                           int c, int w4, int lane, int ctid) {
  hg::consumer_sync();
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) ot[ot_pos(i, c, w4, lane)] = hg::to_half_bits<BF16>(d[i]);
  store_rows<BN>(ot, p, rb, tok0, ctid);
}

// Stage barriers of a pipeline: full[s] completes on the producer's arrive.expect_tx and the bytes it announced,
// empty[s] on one arrival per consumer warp (release_stage).
constexpr int RELEASERS = 8;  // consumer warps
template <int STAGES>
__device__ __forceinline__ void init_stage_barriers(uint64_t* full, uint64_t* empty) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      hg::mbar_init(&full[s], 1);
      hg::mbar_init(&empty[s], RELEASERS);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
}

// A consumer warp is done with a stage: every lane's ld.shared of it is ordered before the arrive (__syncwarp, then
// lane 0), as the persistent kernel does. One arrive per warpgroup ordered the other warps' loads only through the
// wgmma they feed. compute-sanitizer racecheck still reports write-after-read hazards between these loads and the
// bulk copy that refills the stage, in the 256-token tile kernel (the only one whose small case refills a stage),
// with or without fence.proxy.async before the arrive; outputs right in every run (kernels.md, "Session 17").
__device__ __forceinline__ void release_stage(uint64_t* empty, int lane) {
  __syncwarp();
  if (lane == 0) hg::mbar_arrive(empty);
}

// Producer warpgroup of the tile kernel: gives its registers to the consumers, and one thread streams the nslab
// slabs of tile row t0 through the stage ring.
template <int BN, int STAGES, int STAGE, int PV>
__device__ __forceinline__ void produce_tiles(uint8_t* smem, uint64_t* full, uint64_t* empty, const CUtensorMap* xmap,
                                              const Params& p, int64_t t0, int nslab, int tok0) {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
  if (threadIdx.x != 0) return;
  asm volatile("prefetch.tensormap [%0];" ::"l"(xmap) : "memory");
  for (int s = 0; s < nslab; ++s) {
    const int st = s % STAGES;
    hg::mbar_wait(&empty[st], ((s / STAGES) & 1) ^ 1);
    issue_slab<BN, PV, STAGES>(smem + st * STAGE, &full[st], xmap, p, t0 + (s >> 1), s, tok0);
  }
}

template <int BN, bool BF16, int PV = PV_BASE>
__global__ void __launch_bounds__(THREADS, 1) hybrid_prefill_kernel(const __grid_constant__ CUtensorMap xmap,
                                                                    const Params p) {
#ifdef PATCHLLM_HAVE_WGMMA
  using C = Cfg<BN>;
  extern __shared__ uint8_t smem_raw[];
  // 128-byte swizzled TMA boxes and their descriptors want 1024-byte aligned stage buffers.
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + C::STAGES * C::STAGE);
  uint64_t* empty = full + C::STAGES;
  // Grouped raster (hybrid_split.h): GROUP row-blocks × all token blocks per group.
  const RasterPos rp = grouped_raster(blockIdx.x, p.RB, (p.M + BN - 1) / BN, GROUP);
  const int rb = rp.unit, tok0 = rp.tb * BN;
  const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
  const int nslab = (p.K + SLAB_K - 1) / SLAB_K;  // slabs wholly past K (ragged last tile) are skipped
  const int64_t tbase = int64_t(rb) * p.CT;
  init_stage_barriers<C::STAGES>(full, empty);
  if (wg == 0) {  // producer: one thread issues everything
    produce_tiles<BN, C::STAGES, C::STAGE, PV>(smem, full, empty, &xmap, p, tbase, nslab, tok0);
    return;
  }

  // consumers: warpgroup c = wg - 1 owns rows 64c .. 64c + 63; its warp w4 the 16-row group 4c + w4.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const int c = wg - 1, w4 = tid >> 5, lane = tid & 31, grp = 4 * c + w4;
  float d[C::ACC];
#pragma unroll
  for (int i = 0; i < C::ACC; ++i) d[i] = 0.f;
  // pa, pm: the previous slab's registers (mma_slab holds them until its wait)
  auto slab = [&](int s, uint4 (&a)[4], uint32_t& meta, uint4 (&pa)[4], uint32_t& pm) {
    const int st = s % C::STAGES;
    const bool sparse = __ldg(p.kinds + tbase + (s >> 1)) != 0;
    hg::mbar_wait(&full[st], (s / C::STAGES) & 1);
    const bool load = !pv_has(PV, PV_PROBE_A_ONCE) || s < 2;
    mma_slab<BN, BF16, PV>(d, a, meta, pa, pm, smem + st * C::STAGE, sparse, grp, lane, load);
    if (s > 0) release_stage(&empty[(s - 1) % C::STAGES], lane);
  };
  uint4 a0[4], a1[4];
  uint32_t m0, m1;
  if constexpr (pv_has(PV, PV_LEAN | PV_PROBES | PV_BATCHED)) {  // predicated loads leave unused registers as they
#pragma unroll                                                      // were; PV_BATCHED holds both sets (keep_reg)
    for (int j = 0; j < 4; ++j) a0[j] = a1[j] = make_uint4(0, 0, 0, 0);
    m0 = m1 = 0;
  }
  for (int s = 0; s < nslab; s += 2) {
    slab(s, a0, m0, a1, m1);
    if (s + 1 < nslab) slab(s + 1, a1, m1, a0, m0);
  }
  wg_wait<0>();
  fence_acc(d);
  // The stage buffers are free once both consumer warpgroups are past their last wgmma (store_tile's first barrier).
  store_tile<BN, BF16>(d, reinterpret_cast<uint16_t*>(smem), p, rb, tok0, c, w4, lane, threadIdx.x - 128);
#else
  (void)xmap;
  (void)p;
  __trap();  // built without sm_90a: the launcher never selects this kernel then
#endif
}

// ---- stream-K kernel (v5) -------------------------------------------------------------------------------------
// Why: the tile kernel runs one CTA per (row-block, 128/256-token block). At M ≤ 512 that is too few CTAs for 132 SMs
// (4096 rows × 64 tokens: 32 CTAs) or a bad last wave (12288 rows: 96), and it ran at 0.4–0.8× cuBLAS there.
// Here a grid of G CTAs (one per SM) splits the sequence of work units L = key·NS + s (key = rb·TB + tb: the 128-token
// blocks of a row-block adjacent, so its weight slabs are re-read from L2; s = 64-K slab, NS per tile) into G equal
// ranges, CTA c taking [⌊LU·c/G⌋, ⌊LU·(c+1)/G⌋). A tile split between CTAs (only a CTA's first and last can be) goes
// through fp32 slots in the workspace; its last contributor (atomic counter) sums the slots in CTA order, so results
// are deterministic. The pipeline and the wgmmas are the tile kernel's; the epilogue has its own shared buffer because
// the producer is already filling stages for the CTA's next tile.
// Equal units, not equal bytes (as hybrid_gemm.cuh balances): the ranges are then closed-form, so the contributors of
// a split tile are computed, not looked up. Looking them up (a loop of dependent loads on one thread) made ptxas
// serialise every wgmma of the kernel (C7520). The cost: at mixed f a CTA's share of dense slabs varies (~46 slabs
// per CTA at 12288 × 4096, M = 64).
__device__ __forceinline__ int64_t sk_begin(int64_t LU, int G, int c) { return LU * c / G; }
__device__ __forceinline__ int sk_owner(int64_t LU, int G, int64_t L) { return int(((L + 1) * G - 1) / LU); }

// Position in the unit sequence, advanced without divisions: one 64-bit division per slab (L / NS, key / TB) cost
// about as much issue time as the slab's wgmmas.
struct SkCursor {
  int s, tb, NS, TB;
  int64_t rb, key, t;  // t = tile index rb·CT + s/2
  __device__ SkCursor(int64_t L, int ns, int tbn, int CT) : NS(ns), TB(tbn) {
    key = L / ns;
    s = int(L - key * ns);
    rb = key / tbn;
    tb = int(key - rb * tbn);
    t = rb * CT + (s >> 1);
  }
  // Next unit; returns true when it starts a new tile.
  __device__ bool next(int CT) {
    if (++s < NS) {
      t += (s & 1) ? 0 : 1;
      return false;
    }
    s = 0;
    ++key;
    if (++tb == TB) tb = 0, ++rb;
    t = rb * CT;
    return true;
  }
};

constexpr int SK_BN = 128;     // tokens per tile: one fp32 partial = 128 × 128 = the workspace slot of hybrid_gemm
constexpr int SK_STAGES = 5;   // 5 × 32 KB + the 34 KB epilogue buffer
constexpr int SK_SMEM = SK_STAGES * Cfg<SK_BN>::STAGE + SK_BN * OSTR * 2 + 2 * SK_STAGES * 8 + 1024;

// PV: PV_BASE or PV_BATCHED (v4i); not PV_LEAN or the probes.
template <bool BF16, int PV = PV_BASE>
__global__ void __launch_bounds__(THREADS, 1) hybrid_prefill_sk_kernel(const __grid_constant__ CUtensorMap xmap,
                                                                       const Params p) {
#ifdef PATCHLLM_HAVE_WGMMA
  constexpr int BN = SK_BN, STAGES = SK_STAGES, STAGE = Cfg<BN>::STAGE, ACC = Cfg<BN>::ACC;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint16_t* ot = reinterpret_cast<uint16_t*>(smem + STAGES * STAGE);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + STAGES * STAGE + BN * OSTR * 2);
  uint64_t* empty = full + STAGES;
  __shared__ int last_flag;

  const int NS = (p.K + SLAB_K - 1) / SLAB_K;
  const int64_t LU = int64_t(p.RB) * p.TB * NS;
  const int G = gridDim.x;
  const int64_t Lb = sk_begin(LU, G, blockIdx.x), Le = sk_begin(LU, G, blockIdx.x + 1);
  const int n = int(Le - Lb);  // units of this CTA (≤ LU / G + 1)
  if (n <= 0) return;
  init_stage_barriers<STAGES>(full, empty);
  const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (tid == 0) {
      asm volatile("prefetch.tensormap [%0];" ::"l"(&xmap) : "memory");
      SkCursor cur(Lb, NS, p.TB, p.CT);
      for (int i = 0, st = 0, ph = 0; i < n; ++i) {
        hg::mbar_wait(&empty[st], uint32_t(ph ^ 1));
        issue_slab<BN, PV, STAGES>(smem + st * STAGE, &full[st], &xmap, p, cur.t, cur.s, cur.tb * BN);
        cur.next(p.CT);
        if (++st == STAGES) st = 0, ph ^= 1;
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const int c = wg - 1, w4 = tid >> 5, lane = tid & 31, grp = 4 * c + w4, ctid = threadIdx.x - 128;
  float d[ACC];
#pragma unroll
  for (int i = 0; i < ACC; ++i) d[i] = 0.f;
  int pending = -1;  // stage read by the wgmmas still in flight, released once they are done
  int st = 0, ph = 0;
  SkCursor cur(Lb, NS, p.TB, p.CT);
  // pa, pm: the previous slab's registers (mma_slab holds them until its wait)
  auto slab = [&](uint4 (&a)[4], uint32_t& meta, uint4 (&pa)[4], uint32_t& pm) {
    hg::mbar_wait(&full[st], uint32_t(ph));
    mma_slab<BN, BF16, PV>(d, a, meta, pa, pm, smem + st * STAGE, __ldg(p.kinds + cur.t) != 0, grp, lane);
    if (pending >= 0) release_stage(&empty[pending], lane);
    pending = st;
    if (++st == STAGES) st = 0, ph ^= 1;
  };
  // Tile (key, rb, tb) done with `done` of its NS units (`first`: the CTA's first tile): straight to y when this CTA
  // covered all of it, else through its slot; the last contributor sums every contributor's slot in CTA order.
  auto finish = [&](int64_t key, int64_t rb64, int tb, int done, bool first) {
    wg_wait<0>();
    fence_acc(d);
    release_stage(&empty[pending], lane);
    pending = -1;
    const int rb = int(rb64), tok0 = tb * BN;
    if (done < NS) {
      float* sl = p.slots + (int64_t(blockIdx.x) * 2 + (first ? 0 : 1)) * hg::SLOT_FLOATS;
#pragma unroll
      for (int i = 0; i < ACC; ++i) __stcg(sl + i * 256 + ctid, d[i]);  // fragment order: coalesced, same for all
      __threadfence();
      hg::consumer_sync();
      if (ctid == 0) {
        const int old = atomicAdd(p.counters + key, done);
        const int last = old + done == NS;
        if (last) p.counters[key] = 0;  // clean for the next launch
        __threadfence();
        last_flag = last;
      }
      hg::consumer_sync();
      if (last_flag) {
        // Contributors: the owners of the tile's first and last unit and every CTA between; slot 0 holds a CTA's
        // first tile, slot 1 its last, so only the first contributor can hold this tile in slot 1.
        const int64_t L0 = key * NS;
        const int c0 = sk_owner(LU, G, L0), c1 = sk_owner(LU, G, L0 + NS - 1);
        const int slot0 = sk_begin(LU, G, c0) < L0 ? 1 : 0;
        // Sum in chunks of 16 elements, each contributor's 16 loads in flight together (one L2 round trip per
        // chunk and contributor; per element, the reduction tail was ~40 µs). Never into the accumulators: ptxas
        // serialises every wgmma of the kernel (C7520) when they are written on a path it cannot prove uniform.
        hg::consumer_sync();
        const float* head = p.slots + (int64_t(c0) * 2 + slot0) * hg::SLOT_FLOATS + ctid;
#pragma unroll
        for (int i0 = 0; i0 < ACC; i0 += 16) {
          float v[16];
#pragma unroll
          for (int k = 0; k < 16; ++k) v[k] = __ldcg(head + (i0 + k) * 256);
          for (int cc = c0 + 1; cc <= c1; ++cc) {
            const float* src = p.slots + int64_t(cc) * 2 * hg::SLOT_FLOATS + ctid;  // slot 0: its first tile
            float w[16];
#pragma unroll
            for (int k = 0; k < 16; ++k) w[k] = __ldcg(src + (i0 + k) * 256);
#pragma unroll
            for (int k = 0; k < 16; ++k) v[k] += w[k];
          }
#pragma unroll
          for (int k = 0; k < 16; ++k) ot[ot_pos(i0 + k, c, w4, lane)] = hg::to_half_bits<BF16>(v[k]);
        }
        store_rows<BN>(ot, p, rb, tok0, ctid);
      }
      return;
    }
    store_tile<BN, BF16>(d, ot, p, rb, tok0, c, w4, lane, ctid);
  };
  auto zero = [&]() {
#pragma unroll
    for (int i = 0; i < ACC; ++i) d[i] = 0.f;
  };
  uint4 a0[4] = {}, a1[4] = {};
  uint32_t m0 = 0, m1 = 0;
  int done = 0;
  bool first = true;
  // After a slab: close its tile if the next unit starts another one or this CTA's range ends.
  auto advance = [&](int i) {
    ++done;
    const int64_t key = cur.key, rb = cur.rb;
    const int tb = cur.tb;
    if (cur.next(p.CT) || i + 1 == n) {
      finish(key, rb, tb, done, first);
      zero();
      done = 0;
      first = false;
    }
  };
  static_assert(!pv_has(PV, PV_LEAN | PV_PROBES), "stream-K kernel: PV_BASE or PV_BATCHED only");
  if constexpr (PV == PV_BATCHED) {
    // Tile by tile, so that the inner loop holds only the slabs' loads and wgmmas. With finish() inside the loop (the
    // flat form below), ptxas drains the wgmma pipeline at every iteration (an injected wait_group 0, C7517), which
    // would undo v4i. Same units in the same order as the flat form, so the same bits.
    for (int i = 0; i < n;) {
      const int64_t key = cur.key, rb = cur.rb;
      const int tb = cur.tb, cnt = min(NS - cur.s, n - i);  // this tile's units in the CTA's range
      for (int j = 0; j < cnt; j += 2) {
        slab(a0, m0, a1, m1);
        cur.next(p.CT);
        if (j + 1 < cnt) {
          slab(a1, m1, a0, m0);
          cur.next(p.CT);
        }
      }
      i += cnt;
      finish(key, rb, tb, cnt, first);
      zero();
      first = false;
    }
  } else {
    for (int i = 0; i < n; i += 2) {
      // Two slabs per iteration so that the two A-register buffers stay compile-time (no local-memory arrays).
      slab(a0, m0, a1, m1);
      advance(i);
      if (i + 1 < n) {
        slab(a1, m1, a0, m0);
        advance(i + 1);
      }
    }
  }
#else
  (void)xmap;
  (void)p;
  __trap();
#endif
}

// ---- persistent cluster kernel (v7, session 28) ----------------------------------------------------------------
// Why: Nsight Compute put cuSPARSELt's prefill kernel (session 27) on v4d's own tile, 128 rows × 256 tokens × 64 K,
// with the tensor pipe 71% busy against v4d's 55%. Two of the differences found are independent of the weight's
// format: cuSPARSELt's grid is persistent, and its 2–4-CTA clusters share the x operand (v4d moves 31% more L2
// sectors). v7 is v4i (v4d's pipeline and RS wgmmas, one group per slab) with both:
// - Clusters of 2 CTAs take adjacent row-blocks of one 256-token block. Each loads half of the x box (128 tokens) by
//   TMA multicast into both, so x leaves L2 once per pair: 25 instead of 41 KB per slab and CTA at f = 1. Both
//   producers write a stage, so every consumer warp releases it in both CTAs, with the plain (.release.cta) remote
//   arrive (the .release.cluster form is a GPU-scope MEMBAR per slab, which made v4c 0.4× in session 11). An odd
//   last row-block is paired with a pad CTA that loads its half of x, skips the weights and stores nothing.
// - One cluster per SM pair loops over the units (row-block pair, token block) in the grouped raster order, and the
//   stage ring runs on across units: the producer fills the next unit's stages while the consumers store the last
//   one. The epilogue has its own buffer, half a tile (34 KB) beside four 48 KB stages, stored in two passes.
// - Each unit's first wgmma has scale-d 0 (the accumulators' old values ignored, as CUTLASS does), instead of a
//   zeroing loop between units.
// - SS (with the prefill image, hybrid_format.h): the weight is the wgmma A operand from shared memory by descriptor,
//   not through ld.shared and registers (session 27's v6b). Only with it do the clusters pay: 1.10–1.27× v4d at
//   f ≥ 0.9, against 0.92–1.09× with the v1 blob (RS).
// - Session 29: where every tile is 2:4 (HybridGemmArgs::prefill_all_sparse), stages sized for 2:4 slabs, five of
//   41 KB instead of four of 48 KB (ClCfg): 1.11–1.18× the four-stage kernel at f = 1 on an H100; and the epilogue
//   packs pairs and stores them transposed with stmatrix (store_pass_cl).
// The wgmmas per slab are v4d's in the same order, so outputs are v4d's bit for bit. Measured: kernels.md,
// "Session 28" and "Session 29".
constexpr int CL_BN = 256, CL_CTAS = 2;
constexpr int CL_TOKENS_PER_CTA = CL_BN / CL_CTAS;  // each CTA's share of the x box (the x map's box height)
// Row-block groups (the last one padded where RB is odd) of a cluster unit, and units (group, 256-token block).
__host__ __device__ constexpr int cl_row_groups(int RB) { return (RB + CL_CTAS - 1) / CL_CTAS; }
__host__ __device__ constexpr int cl_units(int RB, int M) { return cl_row_groups(RB) * ((M + CL_BN - 1) / CL_BN); }
constexpr int CL_SMEM = 227 * 1024;  // all of it (the stages aligned to 1024 inside, checked)
// Stages and epilogue buffer. A stage holds the x box and the largest weight slab it may meet: 16 KB dense, so four
// stages and a 128-token epilogue buffer. SPARSE_ONLY (every tile 2:4, the launcher's promise): 9 KB slabs, so five
// stages of 41 KB and a 64-token buffer (four passes), as cuSPARSELt sizes its stages for 2:4 slabs.
template <bool SPARSE_ONLY>
struct ClCfg {
  static constexpr int STAGE = Cfg<CL_BN>::X_BYTES + (SPARSE_ONLY ? hg::SPARSE_UNIT : hg::DENSE_UNIT);
  static constexpr int STAGES = SPARSE_ONLY ? 5 : 4;
  static constexpr int OT_TOK = SPARSE_ONLY ? 64 : 128;
  static constexpr int USED = STAGES * STAGE + OT_TOK * OSTR * 2 + 2 * STAGES * 8;
  static_assert(STAGE % 1024 == 0, "v7: stages must stay 1024-aligned (128-byte swizzle atoms)");
  static_assert(USED <= CL_SMEM, "v7: stages + epilogue buffer exceed 227 KB");  // (alignment: checked at run time)
};

__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}
// The 2-D box (k0, m0) into dst of every CTA in `mask`, each completing the bytes on its barrier at bar's offset.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const CUtensorMap* map, int k0, int m0, uint64_t* bar,
                                                      uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(hg::smem_addr(dst)),
      "l"(map), "r"(k0), "r"(m0), "r"(hg::smem_addr(bar)), "h"(mask)
      : "memory");
}
// Arrive on the barrier at bar's offset in cluster CTA `rank`, with the default .release.cta semantics (CUTLASS's
// ClusterBarrier::arrive(cta_id)): what it orders is this warp's reads of the stage, done, before the refill.
__device__ __forceinline__ void mbar_arrive_cta(uint64_t* bar, uint32_t rank) {
  asm volatile("{ .reg .b32 ra; mapa.shared::cluster.u32 ra, %0, %1; mbarrier.arrive.shared::cluster.b64 _, [ra]; }" ::
                   "r"(hg::smem_addr(bar)),
               "r"(rank)
               : "memory");
}

// RS: v4i's slab blocks (PATCHLLM_WGD / PATCHLLM_WGS at N = 256) with the first wgmma's scale-d from %146 (0: start).
// Operands: 128 accumulators, the 16 A registers %128–%143, the B descriptor %144, metadata %145, accumulate %146.
#define PATCHLLM_CL_K16(TY, A, DESC, P) \
  "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " " PATCHLLM_WG_D128 ", " A ", " DESC ", " P ", 1, 1, 0;"
#define PATCHLLM_CL_K32(TY, A, DESC, SEL, P)                                                                   \
  "wgmma.mma_async.sp.sync.aligned.m64n256k32.f32." TY "." TY " " PATCHLLM_WG_D128 ", " A ", " DESC ", %145, " SEL \
  ", " P ", 1, 1, 0;"
#define PATCHLLM_CL_PRED "setp.ne.b32 p, 1, 0; setp.ne.b32 z, %146, 0;"
#define PATCHLLM_CL_DENSE(TY)                                                                                  \
  "{ .reg .pred p, z; .reg .b64 d1, d2, d3;" PATCHLLM_CL_PRED                                                  \
  "add.s64 d1, %144, 2; add.s64 d2, %144, 4; add.s64 d3, %144, 6;"                                             \
  PATCHLLM_CL_K16(TY, "{%128, %129, %130, %131}", "%144", "z") PATCHLLM_CL_K16(TY, "{%132, %133, %134, %135}", \
  "d1", "p") PATCHLLM_CL_K16(TY, "{%136, %137, %138, %139}", "d2", "p")                                       \
  PATCHLLM_CL_K16(TY, "{%140, %141, %142, %143}", "d3", "p") "wgmma.commit_group.sync.aligned; }"
#define PATCHLLM_CL_SPARSE(TY)                                                                                 \
  "{ .reg .pred p, z; .reg .b64 d2;" PATCHLLM_CL_PRED "add.s64 d2, %144, 4;"                                   \
  PATCHLLM_CL_K32(TY, "{%128, %129, %130, %131}", "%144", "0", "z")                                            \
  PATCHLLM_CL_K32(TY, "{%132, %133, %134, %135}", "d2", "1", "p") "wgmma.commit_group.sync.aligned; }"
// The SS form (session 27's v6b): A from the prefill image by descriptor. Operands: 128 accumulators, the A
// descriptor %128 (k16 / k32 step at +32 B), the B descriptor %129 (+32 B dense, +64 B 2:4), metadata %130,
// accumulate %131.
#define PATCHLLM_CL_SS_PRED "setp.ne.b32 p, 1, 0; setp.ne.b32 z, %131, 0;"
#define PATCHLLM_CL_SS_K16(TY, A, B, P) \
  "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " " PATCHLLM_WG_D128 ", " A ", " B ", " P ", 1, 1, 0, 0;"
#define PATCHLLM_CL_SS_K32(TY, A, B, SEL, P)                                                                   \
  "wgmma.mma_async.sp.sync.aligned.m64n256k32.f32." TY "." TY " " PATCHLLM_WG_D128 ", " A ", " B ", %130, " SEL  \
  ", " P ", 1, 1, 0, 0;"
#define PATCHLLM_CL_SS_DENSE(TY)                                                                               \
  "{ .reg .pred p, z; .reg .b64 a1, a2, a3, b1, b2, b3;" PATCHLLM_CL_SS_PRED                                   \
  "add.s64 a1, %128, 2; add.s64 a2, %128, 4; add.s64 a3, %128, 6;"                                             \
  "add.s64 b1, %129, 2; add.s64 b2, %129, 4; add.s64 b3, %129, 6;"                                             \
  PATCHLLM_CL_SS_K16(TY, "%128", "%129", "z") PATCHLLM_CL_SS_K16(TY, "a1", "b1", "p")                          \
  PATCHLLM_CL_SS_K16(TY, "a2", "b2", "p") PATCHLLM_CL_SS_K16(TY, "a3", "b3", "p")                              \
  "wgmma.commit_group.sync.aligned; }"
#define PATCHLLM_CL_SS_SPARSE(TY)                                                                              \
  "{ .reg .pred p, z; .reg .b64 a1, b2;" PATCHLLM_CL_SS_PRED "add.s64 a1, %128, 2; add.s64 b2, %129, 4;"       \
  PATCHLLM_CL_SS_K32(TY, "%128", "%129", "0", "z") PATCHLLM_CL_SS_K32(TY, "a1", "b2", "1", "p")                \
  "wgmma.commit_group.sync.aligned; }"
// One slab's asm block in the caller's dtype (BF16) into its accumulators d: BLOCK(TY) is one of the slab macros
// above (PATCHLLM_CL_DENSE, _SPARSE, _SS_DENSE, _SS_SPARSE), OPS its input operands.
#define PATCHLLM_CL_ASM(BLOCK, OPS)                              \
  do {                                                           \
    if constexpr (BF16)                                          \
      asm volatile(BLOCK("bf16") : PATCHLLM_WG_ACC128(d) : OPS); \
    else                                                         \
      asm volatile(BLOCK("f16") : PATCHLLM_WG_ACC128(d) : OPS);  \
  } while (0)
template <bool BF16>
__device__ __forceinline__ void wgmma_slab_start_ss(float (&d)[128], uint64_t adesc, uint64_t bdesc, uint32_t meta,
                                                    bool sparse, uint32_t accumulate) {
#ifdef PATCHLLM_HAVE_WGMMA
#define PATCHLLM_CL_SS_OPS "l"(adesc), "l"(bdesc), "r"(meta), "r"(accumulate)
  if (__any_sync(0xffffffffu, sparse))
    PATCHLLM_CL_ASM(PATCHLLM_CL_SS_SPARSE, PATCHLLM_CL_SS_OPS);
  else
    PATCHLLM_CL_ASM(PATCHLLM_CL_SS_DENSE, PATCHLLM_CL_SS_OPS);
#undef PATCHLLM_CL_SS_OPS
#else
  (void)d, (void)adesc, (void)bdesc, (void)meta, (void)sparse, (void)accumulate;
#endif
}
// K-major, 64-byte swizzle (a 2:4 slab of the prefill image: rows of 32 kept values), 8-row groups 512 B apart.
__device__ __forceinline__ uint64_t desc_sw64(uint32_t saddr) {
  return uint64_t((saddr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(512 >> 4) << 32) | (uint64_t(2) << 62);
}

// v7's epilogue, one pass of OT tokens (accumulators d0[0, OT / 2)) through ot to y. Pairs of accumulators (one
// weight row, two adjacent tokens) are rounded as to_half_bits does and stored transposed by stmatrix: one
// instruction per four 8 × 8 blocks, each block row a token's eight consecutive weight rows (16 B), against eight
// st.shared.u16 before session 29; then store_rows. The first barrier: every consumer thread is done reading ot's
// previous contents. Session 29 measured the global stores at 8–10% of v7's time with four stages (probe
// PATCHLLM_CL_PROBE_NO_GSTORE, wrong results), 2% with five.
template <bool BF16>
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  if constexpr (BF16) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}
template <int OT, bool BF16>
__device__ __forceinline__ void store_pass_cl(const float* d0, uint16_t* ot, const Params& p, int rb, int tok0, int c,
                                              int w4, int lane, int ctid, const float4* add) {
  hg::consumer_sync();
  const int m = lane >> 3;  // the 8 × 8 block this lane addresses: tokens + 8 · (m >> 1), weight rows + 8 · (m & 1)
  uint16_t* base = ot + (8 * (m >> 1) + (lane & 7)) * OSTR + 64 * c + 16 * w4 + 8 * (m & 1);
#pragma unroll
  for (int k = 0; k < OT / 16; ++k) {  // 16 tokens: d0[8k .. 8k + 7]
    float e[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = d0[8 * k + j];
    if (add) {  // (v8's cut tail) plus these accumulators' partial sums: float4s 2k and 2k + 1 of the pass, per thread
      const float4 a0 = __ldcg(add + (2 * k) * 256), a1 = __ldcg(add + (2 * k + 1) * 256);
      e[0] += a0.x, e[1] += a0.y, e[2] += a0.z, e[3] += a0.w, e[4] += a1.x, e[5] += a1.y, e[6] += a1.z, e[7] += a1.w;
    }
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(
                     hg::smem_addr(base + 16 * k * OSTR)),
                 "r"(pack_half2<BF16>(e[0], e[1])), "r"(pack_half2<BF16>(e[2], e[3])),
                 "r"(pack_half2<BF16>(e[4], e[5])), "r"(pack_half2<BF16>(e[6], e[7]))
                 : "memory");
  }
#ifdef PATCHLLM_CL_PROBE_NO_GSTORE
  hg::consumer_sync();
#else
  store_rows<OT>(ot, p, rb, tok0, ctid);
#endif
}
// A cluster unit's 128 × CL_BN outputs, CL_BN / OT passes through ot. Only where rb < p.RB (not the pad CTA), which
// is uniform over the CTA, so the consumer barriers inside see all 256 threads. add (v8's cut tail): this thread's
// float4 0 of the unit's partial sums (tail_slot + ctid; float4 i at add[256 i]), added as they are stored, so that
// no instruction but a wgmma writes the accumulators (ptxas serialises every wgmma of a kernel where one does:
// C7515; session 37's first cut-tail build ran 0.6-0.8x v8 so).
template <int OT, bool BF16>
__device__ __forceinline__ void store_unit_cl(const float* d, uint16_t* ot, const Params& p, int rb, int tok0, int c,
                                              int w4, int lane, int ctid, const float4* add = nullptr) {
  if (rb >= p.RB) return;
#pragma unroll
  for (int h = 0; h < CL_BN / OT; ++h)
    store_pass_cl<OT, BF16>(d + h * (OT / 2), ot, p, rb, tok0 + h * OT, c, w4, lane, ctid,
                            add ? add + h * (OT / 8) * 256 : nullptr);
}

template <bool BF16>
__device__ __forceinline__ void wgmma_slab_start(float (&d)[128], const uint4 (&a)[4], uint64_t desc, uint32_t meta,
                                                 bool sparse, uint32_t accumulate) {
#ifdef PATCHLLM_HAVE_WGMMA
#define PATCHLLM_CL_RS_OPS PATCHLLM_WG_IN(a, desc, meta), "r"(accumulate)
  if (__any_sync(0xffffffffu, sparse))  // warp-uniform (one tile per warpgroup): VOTE lets ptxas see it
    PATCHLLM_CL_ASM(PATCHLLM_CL_SPARSE, PATCHLLM_CL_RS_OPS);
  else
    PATCHLLM_CL_ASM(PATCHLLM_CL_DENSE, PATCHLLM_CL_RS_OPS);
#undef PATCHLLM_CL_RS_OPS
#else
  (void)d, (void)a, (void)desc, (void)meta, (void)sparse, (void)accumulate;
#endif
}

// Launch: 2-CTA clusters (cluster dimension attribute), grid = 2 × min(cl_units, clusters resident at once), x map
// with a 128-token box (encode_x_map<CL_TOKENS_PER_CTA>).
// SS: p.blob is the prefill image and the weight is the A operand by descriptor; else the v1 blob through registers.
template <bool BF16, bool SS, bool SPARSE_ONLY>
__global__ void __launch_bounds__(THREADS, 1) hybrid_prefill_cl_kernel(const __grid_constant__ CUtensorMap xmap,
                                                                       const Params p) {
#ifdef PATCHLLM_HAVE_WGMMA
  using CC = ClCfg<SPARSE_ONLY>;
  constexpr int STAGE = CC::STAGE, CL_STAGES = CC::STAGES, CL_OT_TOK = CC::OT_TOK;
  constexpr int X_BYTES = Cfg<CL_BN>::X_BYTES, ACC = Cfg<CL_BN>::ACC;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  if (smem + CC::USED > smem_raw + CL_SMEM) __trap();  // (the dynamic window starts 1024-aligned in practice)
  uint16_t* ot = reinterpret_cast<uint16_t*>(smem + CL_STAGES * STAGE);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + CL_STAGES * STAGE + CL_OT_TOK * OSTR * 2);
  uint64_t* empty = full + CL_STAGES;
  const uint32_t rank = cluster_rank();
  const int TB = (p.M + CL_BN - 1) / CL_BN, RBP = cl_row_groups(p.RB), units = cl_units(p.RB, p.M);
  const int cid = int(blockIdx.x) / CL_CTAS, step = int(gridDim.x) / CL_CTAS;
  const int nslab = (p.K + SLAB_K - 1) / SLAB_K;  // slabs wholly past K (ragged last tile) are skipped
  const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
  if (threadIdx.x == 0) {
    for (int s = 0; s < CL_STAGES; ++s) {
      hg::mbar_init(&full[s], 1);
      hg::mbar_init(&empty[s], RELEASERS * CL_CTAS);  // every consumer warp of both CTAs: both write the stage
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  if constexpr (SPARSE_ONLY) {
    // A pad CTA's stages never get weight bytes, and it reads them as 2:4 slabs: start every stage's weight part as
    // 0x44 bytes, so each metadata word is valid (kept pair 0, 1) until a real slab lands.
    for (int i = threadIdx.x; i < CL_STAGES * hg::SPARSE_UNIT / 16; i += THREADS) {
      const int sidx = i / (hg::SPARSE_UNIT / 16), off = i % (hg::SPARSE_UNIT / 16);
      *reinterpret_cast<uint4*>(smem + sidx * STAGE + X_BYTES + off * 16) =
          make_uint4(0x44444444u, 0x44444444u, 0x44444444u, 0x44444444u);
    }
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // before the bulk copies that overwrite them
  }
  cluster_sync_all();  // the peer's multicasts and arrivals target these barriers
  auto unit_pos = [&](int u, int& rb, int& tok0) {
    const RasterPos rp = grouped_raster(u, RBP, TB, GROUP / CL_CTAS);
    rb = rp.unit * CL_CTAS + int(rank);
    tok0 = rp.tb * CL_BN;
  };
  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (threadIdx.x == 0) {
      asm volatile("prefetch.tensormap [%0];" ::"l"(&xmap) : "memory");
      int st = 0, ph = 0;
      for (int u = cid; u < units; u += step) {
        int rb, tok0;
        unit_pos(u, rb, tok0);
        const bool pad = rb >= p.RB;
        const int64_t tbase = int64_t(rb) * p.CT;
        for (int s = 0; s < nslab; ++s) {
          hg::mbar_wait(&empty[st], uint32_t(ph ^ 1));
          uint8_t* stage = smem + st * STAGE;
          const int64_t t = tbase + (s >> 1);
          // (SPARSE_ONLY: never more than a 2:4 slab, whatever the kinds say, so a stage cannot overflow)
          const uint32_t wbytes = pad                             ? 0u
                                  : SPARSE_ONLY || __ldg(p.kinds + t) ? hg::SPARSE_UNIT
                                                                      : hg::DENSE_UNIT;
          hg::mbar_expect_tx(&full[st], X_BYTES + wbytes);  // both halves of x land here
          tma_load_2d_multicast(stage + rank * (X_BYTES / CL_CTAS), &xmap, s * SLAB_K,
                                tok0 + int(rank) * CL_TOKENS_PER_CTA, &full[st], uint16_t((1u << CL_CTAS) - 1));
          if (!pad)
            hg::bulk_copy(stage + X_BYTES, p.blob + __ldg(p.offsets + t) + (s & 1) * wbytes, wbytes, &full[st]);
          if (++st == CL_STAGES) st = 0, ph ^= 1;
        }
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    const int c = wg - 1, w4 = tid >> 5, lane = tid & 31, grp = 4 * c + w4, ctid = threadIdx.x - 128;
    int st = 0, ph = 0, pending = -1;
    auto release = [&](int s) {  // in both CTAs, once this warp's reads of stage s are done
      __syncwarp();
      if (lane == 0)
        for (uint32_t r = 0; r < uint32_t(CL_CTAS); ++r) mbar_arrive_cta(&empty[s], r);
    };
    float d[ACC];
#pragma unroll
    for (int i = 0; i < ACC; ++i) d[i] = 0.f;  // (never read: each unit's first wgmma has scale-d 0)
    for (int u = cid; u < units; u += step) {
      int rb, tok0;
      unit_pos(u, rb, tok0);
      const bool pad = rb >= p.RB;  // the pad CTA runs the wgmmas on whatever its stages hold, and stores nothing
      const int64_t tbase = int64_t(rb) * p.CT;
      // a, meta: this slab's registers; pa, pm: the previous slab's, held until the wait that retires it (keep_reg)
      auto slab = [&](int s, uint4 (&a)[4], uint32_t& meta, uint4 (&pa)[4], uint32_t& pm) {
        // SPARSE_ONLY: the pad CTA too runs 2:4 wgmmas on its stale stages (valid metadata: filled at the start)
        const bool sparse = SPARSE_ONLY || (!pad && __ldg(p.kinds + tbase + (s >> 1)) != 0);
        hg::mbar_wait(&full[st], uint32_t(ph));
        const uint8_t* stage = smem + st * STAGE;
        const uint8_t* w = stage + X_BYTES;
        if constexpr (SS) {
          meta = lds32(w + HYBRID_IMAGE_META_OFFSET + grp * 128 + lane * 4);  // (dense: read, unused)
          const uint64_t adesc = sparse ? desc_sw64(hg::smem_addr(w) + c * 64 * 64)
                                        : desc_sw128(hg::smem_addr(w) + c * 64 * 128);
          fence_acc(d);
          wg_fence();
          wgmma_slab_start_ss<BF16>(d, adesc, desc_sw128(hg::smem_addr(stage)), meta, sparse, s > 0);
        } else {
          // v4d's branch-free loads: the registers a slab's kind does not use come from inside the stage, ignored.
          const uint8_t* unit = w + grp * (sparse ? HYBRID_SPARSE_UNIT_BYTES : HYBRID_DENSE_UNIT_BYTES);
#pragma unroll
          for (int j = 0; j < (SPARSE_ONLY ? 2 : 4); ++j) a[j] = lds128(unit + j * 512 + lane * 16);
          meta = lds32(unit + HYBRID_SPARSE_VALUE_BYTES + lane * 4);
          fence_acc(d);
          wg_fence();
          wgmma_slab_start<BF16>(d, a, desc_sw128(hg::smem_addr(stage)), meta, sparse, s > 0);
        }
        wg_wait<1>();
        fence_acc(d);
        keep_reg(pm);
        if constexpr (!SS) keep_reg(pa);
        if (pending >= 0) release(pending);
        pending = st;
        if (++st == CL_STAGES) st = 0, ph ^= 1;
      };
      uint4 a0[4] = {}, a1[4] = {};  // alternating: the wgmmas still in flight read the previous slab's registers
      uint32_t m0 = 0, m1 = 0;
      for (int s = 0; s < nslab; s += 2) {
        slab(s, a0, m0, a1, m1);
        if (s + 1 < nslab) slab(s + 1, a1, m1, a0, m0);
      }
      wg_wait<0>();
      fence_acc(d);
      release(pending);
      pending = -1;
      store_unit_cl<CL_OT_TOK, BF16>(d, ot, p, rb, tok0, c, w4, lane, ctid);
    }
  }
  cluster_sync_all();  // the peer may still multicast into, or arrive on, this CTA's stages until it is done
#else
  (void)xmap;
  (void)p;
  __trap();
#endif
}

// ---- v8 (session 31): v7's SS form with each row-block pair's slabs sorted, 2:4 slabs in five stages ---------
// Why: v7 with five 2:4-sized stages runs 1.11–1.18× its four dense-sized ones, but only where every tile is 2:4;
// reading each slab's kind at run time in a ring that takes either kind cost ~25% (session 30). The sum over K does
// not depend on the order of the slabs, so a pair of row-blocks (one cluster unit, both CTAs reading the same x
// slab) can run first the slabs where both its tiles are 2:4 (section A, p.order), in five 41 KB stages with the
// kind fixed at compile time, and then the rest (section B: a 2:4 tile beside a dense one, then both dense) in four
// 48 KB stages with the kind read per slab, as v7 does. The two rings share the same bytes: after a change of ring,
// the new one starts again behind the other's oldest stage, and each of its stages waits, before its first fill,
// for the other ring's stages under it to be released. Units alternate A-then-B and B-then-A, so the ring changes
// once per unit. Section B alternates (2:4, dense) and (dense, 2:4) slabs so that both CTAs get the same share of
// dense work (they keep in step through x).
// A pad CTA (odd row-block count) runs its partner's slabs and kinds (hybrid_prefill_order_raw gives it its
// partner's kinds) and stores nothing. Results are not v4d's bit for bit (another order of the fp32 sums).
// p.order: hybrid_prefill_order_raw (hybrid_format.h): per row-block pair, the slab count of section A, the row
// blocks of ranks 0 and 1, then every slab (index | 2:4 bit of rank 0's row block << 30 | of rank 1's << 31). Since
// session 34 the pairs are row blocks of about the same dense-slab count, not (2g, 2g + 1): a pair takes as long as
// its heavier row block.
// Status: hybrid_linear's sharex path where some tile is dense (since session 32; 1.01–1.07× v7 in the median).
// Session 31's builds gave wrong sums wherever 2:4 slabs ran back to back: one register held every slab's metadata,
// overwritten while the previous wgmma still read it (session 32: two alternating registers, keep_reg). Measured:
// docs/benchmarks/kernels.md, "Session 31" and "Session 32".
struct SoCfg {
  using A = ClCfg<true>;
  using B = ClCfg<false>;
  static constexpr int RING = A::STAGES * A::STAGE > B::STAGES * B::STAGE ? A::STAGES * A::STAGE
                                                                           : B::STAGES * B::STAGE;
  static constexpr int OT_TOK = 64;
  static constexpr int USED = RING + OT_TOK * OSTR * 2 + 2 * (A::STAGES + B::STAGES) * 8;
  static_assert(RING % 1024 == 0 && USED <= CL_SMEM, "v8: rings + epilogue buffer exceed 227 KB");
};
// One ring's position: the next stage st, and per stage the phase parity of its next use (bit i: stage i). Per-stage
// parities let a ring start again at any stage when the other ring hands the bytes back (ring_restart).
struct RingPos {
  int st = 0;
  uint32_t bits = 0;
  __device__ __forceinline__ uint32_t parity() const { return (bits >> st) & 1u; }
  __device__ __forceinline__ void advance(int n) {
    bits ^= 1u << st;
    if (++st == n) st = 0;
  }
};
// Where a ring of stages of TO bytes (N of them) starts again after the other ring (stages of FROM bytes), whose next
// stage, `oldest`, holds its least recently filled slab: at the first of its stages that begins at or after that
// one, so its fills follow the consumers' releases up through memory.
template <int FROM, int TO, int N>
__device__ __forceinline__ int ring_restart(int oldest) {
  return (FROM * oldest + TO - 1) / TO % N;
}

__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// v8's cut tail (TAIL; session 37): a cut unit's tail writes its partial sums into the slot of the CTA of the same
// rank in the cluster before (which runs the head) and raises that CTA's flag; the head's CTA waits for the flag,
// clears it for the next launch, and adds the sums as it stores the unit (store_unit_cl). Slots and flags live in
// the workspace (Params::slots, counters: 128 × 256 fp32 and one int per CTA), each thread's accumulators as its own
// float4s.
__device__ __forceinline__ float4* tail_slot(const Params& p, int cta) {
  return reinterpret_cast<float4*>(p.slots + int64_t(cta) * 2 * hg::SLOT_FLOATS);
}
template <int ACC>
__device__ __forceinline__ void tail_put(const float (&d)[ACC], const Params& p, int cta, int ctid) {
  float4* sl = tail_slot(p, cta);
#pragma unroll
  for (int i = 0; i < ACC / 4; ++i) __stcg(sl + i * 256 + ctid, make_float4(d[4 * i], d[4 * i + 1], d[4 * i + 2],
                                                                           d[4 * i + 3]));
  hg::consumer_sync();  // every consumer thread's stores, then the flag (fence: GPU-scope release)
  if (ctid == 0) {
    __threadfence();
    atomicExch(p.counters + cta, 1);
  }
}
// Waits for the tail's flag and clears it; returns this thread's float4 0 of the sums (store_unit_cl adds them).
// The tail's cluster runs it first in its share, so the wait is short; if the flag has not come after a second
// (a bug, or a grid larger than the clusters resident at once), the kernel traps: an error, not a hang.
__device__ __forceinline__ const float4* tail_wait(const Params& p, int cta, int ctid) {
  if (ctid == 0) {
    uint32_t v = 0;
    const unsigned long long t0 = globaltimer();
    for (;;) {
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p.counters + cta) : "memory");
      if (v != 0) break;
      if (globaltimer() - t0 > 1000000000ull) __trap();
      __nanosleep(64);
    }
    p.counters[cta] = 0;
  }
  hg::consumer_sync();
  return tail_slot(p, cta) + ctid;
}

// TAIL: the last waves' units cut into even shares (prefill_item, hybrid_split.h), else whole units only (cluster
// cid: units cid, cid + G, ...). A template argument so that the whole-unit kernel keeps its registers.
// Removed in session 37: a dynamic schedule (units from a counter; sessions 35-36: the hand-out cost 5-10%, each unit
// ~5% longer) and a heaviest-pairs-first order (~1% slower than the grouped raster).
template <bool BF16, bool TAIL>
__global__ void __launch_bounds__(THREADS, 1) hybrid_prefill_sorted_kernel(const __grid_constant__ CUtensorMap xmap,
                                                                           const Params p) {
#ifdef PATCHLLM_HAVE_WGMMA
  using A = SoCfg::A;
  using B = SoCfg::B;
  constexpr int X_BYTES = Cfg<CL_BN>::X_BYTES, ACC = Cfg<CL_BN>::ACC;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  if (smem + SoCfg::USED > smem_raw + CL_SMEM) __trap();
  uint16_t* ot = reinterpret_cast<uint16_t*>(smem + SoCfg::RING);
  uint64_t* full_a = reinterpret_cast<uint64_t*>(smem + SoCfg::RING + SoCfg::OT_TOK * OSTR * 2);
  uint64_t* empty_a = full_a + A::STAGES;
  uint64_t* full_b = empty_a + A::STAGES;
  uint64_t* empty_b = full_b + B::STAGES;
  const uint32_t rank = cluster_rank();
  const int TB = (p.M + CL_BN - 1) / CL_BN, RBP = cl_row_groups(p.RB), units = cl_units(p.RB, p.M);
  const int cid = int(blockIdx.x) / CL_CTAS, G = int(gridDim.x) / CL_CTAS;
  const bool cut = TAIL && prefill_tail_cut(units, G);
  const int nslab = (p.K + SLAB_K - 1) / SLAB_K;
  const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
  if (threadIdx.x == 0) {
    for (int s = 0; s < A::STAGES; ++s) hg::mbar_init(&full_a[s], 1), hg::mbar_init(&empty_a[s], RELEASERS * CL_CTAS);
    for (int s = 0; s < B::STAGES; ++s) hg::mbar_init(&full_b[s], 1), hg::mbar_init(&empty_b[s], RELEASERS * CL_CTAS);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cluster_sync_all();
  constexpr int HEAD = int(HYBRID_PREFILL_ORDER_HEAD);
  const int ostride = nslab + HEAD;
  // This cluster's item k (prefill_item): the unit's row-block pair (its order row ord) and token block in the grouped
  // raster, its first token, and the walk positions [p0, p1) the item runs (the whole walk but in a cut unit) in the
  // item's walk order, packed; the pair's all-2:4 slab count na is read again where used (registers are short: the
  // producer has 40).
  struct Item {
    const uint32_t* ord;
    int tok0;
    uint32_t walk;  // p0 | p1 << 15 | a_first << 30 (nslab < 2^15: K <= 32768)
    __device__ __forceinline__ int p0() const { return int(walk & 0x7fffu); }
    __device__ __forceinline__ int p1() const { return int((walk >> 15) & 0x7fffu); }
    __device__ __forceinline__ bool a_first() const { return (walk >> 30) & 1u; }
  };
  auto item_at = [&](int k, Item& t) {
    PrefillItem it;
    if (!prefill_item(k, cid, G, units, cut, it)) return false;
    const RasterPos rp = grouped_raster(it.unit, RBP, TB, GROUP / CL_CTAS);
    t.ord = p.order + int64_t(rp.unit) * ostride;
    t.tok0 = rp.tb * CL_BN;
    const int na = int(__ldg(t.ord));
    const int p0 = TAIL ? prefill_walk_cut(it.t0, na, nslab, it.a_first) : 0;
    const int p1 = TAIL ? prefill_walk_cut(it.t1, na, nslab, it.a_first) : nslab;
    t.walk = uint32_t(p0) | uint32_t(p1) << 15 | uint32_t(it.a_first) << 30;
    return true;
  };
  auto row_block = [&](const Item& t) { return int(__ldg(t.ord + 1 + rank)); };  // p.RB for the pad CTA
  // Both sides walk the same sections through this: the item's non-empty ones in its walk order (prefill_section).
  // Sets section `half`'s ring (sa) and slabs [i0, i1); false where the item has none of it. On a change of ring
  // (cur: the ring last used, 0 = A, 1 = B, -1 none yet) the new ring starts again after the other ring's oldest
  // stage (ring_restart), and `changed` is set.
  auto enter_section = [&](const Item& t, int half, bool& sa, int& i0, int& i1, int& cur, RingPos& ra, RingPos& rbp,
                           bool& changed) {
    if (!prefill_section(t.a_first(), half, int(__ldg(t.ord)), nslab, t.p0(), t.p1(), sa, i0, i1)) return false;
    changed = cur == int(sa);  // (cur 1 = B: so cur == sa means the other ring)
    if (changed) {
      if (sa)
        ra.st = ring_restart<B::STAGE, A::STAGE, A::STAGES>(rbp.st);
      else
        rbp.st = ring_restart<A::STAGE, B::STAGE, B::STAGES>(ra.st);
    }
    cur = int(!sa);
    return true;
  };
  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (threadIdx.x == 0) {
      asm volatile("prefetch.tensormap [%0];" ::"l"(&xmap) : "memory");
      RingPos ra, rbp;
      int cur = -1, check = 0;  // the ring last filled (enter_section); fills left that check the other ring
      // Slabs i0 .. i1 - 1 of the order row into ring A (SA: 2:4, five stages) or B (either kind, four stages). The
      // first fill of each stage after a change of ring first waits until the other ring's stages it overlaps are
      // released (their last fills read by every consumer of both CTAs: the peer's producer waits on its own
      // barriers, which count this CTA's consumers too, before it multicasts into these bytes).
      auto fill = [&](auto sec_a, const uint32_t* ord, int i0, int i1, int64_t tbase, int tok0, RingPos& r,
                      const RingPos& o) {
        constexpr bool SA = decltype(sec_a)::value;
        constexpr int STAGE = SA ? A::STAGE : B::STAGE, N = SA ? A::STAGES : B::STAGES;
        constexpr int OSTAGE = SA ? B::STAGE : A::STAGE, ON = SA ? B::STAGES : A::STAGES;
        uint64_t* full = SA ? full_a : full_b;
        uint64_t* empty = SA ? empty_a : empty_b;
        uint64_t* oempty = SA ? empty_b : empty_a;
        for (int i = i0; i < i1; ++i) {
          const uint32_t e = __ldg(ord + HEAD + i);
          const int s = int(e & 0x3fffffffu);
          const uint32_t wbytes = SA || ((e >> (30 + rank)) & 1u) ? hg::SPARSE_UNIT : hg::DENSE_UNIT;
          const int64_t woff = __ldg(p.offsets + tbase + (s >> 1)) + (s & 1) * wbytes;
          if (check > 0) {
            --check;
#pragma unroll
            for (int j = 0; j < ON; ++j)
              if (j * OSTAGE < (r.st + 1) * STAGE && r.st * STAGE < (j + 1) * OSTAGE)
                hg::mbar_wait(&oempty[j], ((o.bits >> j) & 1u) ^ 1u);
          }
          hg::mbar_wait(&empty[r.st], r.parity() ^ 1u);
          uint8_t* stage = smem + r.st * STAGE;
          hg::mbar_expect_tx(&full[r.st], X_BYTES + wbytes);
          tma_load_2d_multicast(stage + rank * (X_BYTES / CL_CTAS), &xmap, s * SLAB_K,
                                tok0 + int(rank) * CL_TOKENS_PER_CTA, &full[r.st], uint16_t((1u << CL_CTAS) - 1));
          hg::bulk_copy(stage + X_BYTES, p.blob + woff, wbytes, &full[r.st]);
          r.advance(N);
        }
      };
      Item t;
      for (int k = 0; item_at(k, t); ++k) {
        if (t.p0() >= t.p1()) continue;  // an empty piece of a cut unit: the other cluster runs all of it
        const int rb = row_block(t), rbw = rb < p.RB ? rb : int(__ldg(t.ord + 1));  // the pad CTA: its partner's
        const int64_t tbase = int64_t(rbw) * p.CT;
        for (int half = 0; half < 2; ++half) {
          bool sa, changed;
          int i0, i1;
          if (!enter_section(t, half, sa, i0, i1, cur, ra, rbp, changed)) continue;
          if (changed) check = sa ? A::STAGES : B::STAGES;
          if (sa)
            fill(std::true_type(), t.ord, i0, i1, tbase, t.tok0, ra, rbp);
          else
            fill(std::false_type(), t.ord, i0, i1, tbase, t.tok0, rbp, ra);
        }
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    const int c = wg - 1, w4 = tid >> 5, lane = tid & 31, grp = 4 * c + w4, ctid = threadIdx.x - 128;
    RingPos ra, rbp;
    int cur = -1;
    uint64_t* pending = nullptr;
    auto release = [&](uint64_t* bar) {  // in both CTAs, once this warp's reads of that stage are done
      __syncwarp();
      if (lane == 0)
        for (uint32_t r = 0; r < uint32_t(CL_CTAS); ++r) mbar_arrive_cta(bar, r);
    };
    float d[ACC];
#pragma unroll
    for (int i = 0; i < ACC; ++i) d[i] = 0.f;  // (never read: each unit's first wgmma has scale-d 0)
    uint32_t acc = 0;  // 0: the unit's first wgmma starts the sums
    // Slabs i0 .. i1 - 1 of the order row from ring A (SA: every slab 2:4) or B (the kind read per slab). The 2:4
    // wgmma reads its metadata register while it runs, after the next slab's is loaded: two registers alternate, and
    // each is held (keep_reg) until the wait that retires its slab. (A first build with one register gave wrong sums
    // wherever a 2:4 slab followed one, and right ones under compute-sanitizer synccheck, which slows the issue.)
    uint32_t m0 = 0, m1 = 0;
    auto consume = [&](auto sec_a, const uint32_t* ord, int i0, int i1, RingPos& r) {
      constexpr bool SA = decltype(sec_a)::value;
      constexpr int STAGE = SA ? A::STAGE : B::STAGE, N = SA ? A::STAGES : B::STAGES;
      uint64_t* full = SA ? full_a : full_b;
      uint64_t* empty = SA ? empty_a : empty_b;
      auto slab = [&](int i, uint32_t& meta, uint32_t& prev) {
        const bool sparse = SA || ((__ldg(ord + HEAD + i) >> (30 + rank)) & 1u);
        hg::mbar_wait(&full[r.st], r.parity());
        const uint8_t* stage = smem + r.st * STAGE;
        const uint8_t* w = stage + X_BYTES;
        meta = lds32(w + HYBRID_IMAGE_META_OFFSET + grp * 128 + lane * 4);  // (dense: unused)
        const uint64_t adesc = sparse ? desc_sw64(hg::smem_addr(w) + c * 64 * 64)
                                      : desc_sw128(hg::smem_addr(w) + c * 64 * 128);
        fence_acc(d);
        wg_fence();
        wgmma_slab_start_ss<BF16>(d, adesc, desc_sw128(hg::smem_addr(stage)), meta, sparse, acc);
        wg_wait<1>();
        fence_acc(d);
        keep_reg(prev);  // the previous slab's wgmmas, now done, read it up to here
        if (pending) release(pending);
        pending = &empty[r.st];
        r.advance(N);
        acc = 1;
      };
      for (int i = i0; i < i1; i += 2) {
        slab(i, m0, m1);
        if (i + 1 < i1) slab(i + 1, m1, m0);
      }
    };
    Item t;
    for (int k = 0; item_at(k, t); ++k) {
      if (t.p0() >= t.p1()) continue;
      acc = 0;
#ifdef PATCHLLM_PREFILL_TIMELINE
      unsigned long long* tl = p.timeline + (int64_t(blockIdx.x) * TIMELINE_UNITS + k) * 3;
      if (p.timeline && ctid == 0 && k < TIMELINE_UNITS) {
        PrefillItem it;
        prefill_item(k, cid, G, units, cut, it);
        tl[0] = globaltimer(), tl[2] = uint64_t(it.unit) | uint64_t(t.p0() > 0 ? 2 : t.p1() < nslab ? 1 : 0) << 30;
      }
#endif
      for (int half = 0; half < 2; ++half) {
        bool sa, changed;
        int i0, i1;
        if (!enter_section(t, half, sa, i0, i1, cur, ra, rbp, changed)) continue;
        if (sa)
          consume(std::true_type(), t.ord, i0, i1, ra);
        else
          consume(std::false_type(), t.ord, i0, i1, rbp);
        // Release the section's last stage now: the other ring's first fills may wait for it, so holding it until
        // the next slab's wgmmas are issued could deadlock.
        wg_wait<0>();
        fence_acc(d);
        keep_reg(m0);
        keep_reg(m1);
        release(pending);
        pending = nullptr;
      }
      if (TAIL && t.p0() > 0) {  // a cut unit's tail: its sums to the head's CTA (the cluster before, same rank)
        tail_put(d, p, int(blockIdx.x) - CL_CTAS, ctid);
      } else {
        // a cut unit's head: plus the tail's sums
        const float4* add = TAIL && t.p1() < nslab ? tail_wait(p, int(blockIdx.x), ctid) : nullptr;
        store_unit_cl<SoCfg::OT_TOK, BF16>(d, ot, p, row_block(t), t.tok0, c, w4, lane, ctid, add);
      }
#ifdef PATCHLLM_PREFILL_TIMELINE
      if (p.timeline && ctid == 0 && k < TIMELINE_UNITS) tl[1] = globaltimer();
#endif
    }
  }
  cluster_sync_all();  // the peer may still multicast into, or arrive on, this CTA's stages until it is done
#else
  (void)xmap;
  (void)p;
  __trap();
#endif
}

}  // namespace hp
}  // namespace patchllm
