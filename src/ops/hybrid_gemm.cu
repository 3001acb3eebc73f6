// Launchers of the hybrid dense/2:4 GEMM. No LibTorch here: CUDA runtime only (the TMA descriptor encoder comes from
// the driver through cudaGetDriverEntryPointByVersion, so nothing links libcuda).
// x: [M, K] bf16/fp16, W: [N, K] packed hybrid (128×128 tiles) -> y: [M, N]. Dispatch by M and architecture:
// M <= 32 split-K decode kernel (hybrid_decode.cuh); above, on sm_90a, the wgmma prefill kernels (hybrid_prefill.cuh:
// stream-K where the tiles are too few for the SMs, else one CTA per tile);
// without wgmma code split-K up to M = 128, then
// the persistent mma.sync kernel (hybrid_gemm.cuh) on request or where wgmma is not built; on sm_8x the split-K
// kernel for every M (64-token chunks).
#include <cudaTypedefs.h>

#include "ops/device_info.cuh"
#include "ops/hybrid_gemm.cuh"
#include "ops/hybrid_decode.cuh"
#include "ops/hybrid_prefill.cuh"
#include "ops/hybrid_gemm.h"
#include "ops/hybrid_split.h"

#include <algorithm>
#include <type_traits>

namespace patchllm {

namespace {

// Tokens per chunk: the narrowest n that holds M, up to 128 (16 n-tiles); larger M loops over chunks.
int tiles_for(int64_t M) { return M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : M <= 64 ? 8 : 16; }

// Lets `Kernel` use `bytes` of dynamic shared memory: set once per kernel (single device assumed for the attribute).
template <auto Kernel>
cudaError_t allow_dynamic_smem(int bytes) {
  static bool done = false;
  if (done) return cudaSuccess;
  cudaError_t e = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  done = e == cudaSuccess;
  return e;
}

template <int NT, bool BF16>
cudaError_t launch(const hg::Params& p, int grid, cudaStream_t stream) {
  using C = hg::Config<NT>;
  cudaError_t e = allow_dynamic_smem<hg::hybrid_gemm_kernel<NT, BF16>>(C::SMEM);
  if (e != cudaSuccess) return e;
  hg::hybrid_gemm_kernel<NT, BF16><<<grid, hg::THREADS, C::SMEM, stream>>>(p);
  return cudaGetLastError();
}

template <bool BF16>
cudaError_t launch_nt(int nt, const hg::Params& p, int grid, cudaStream_t stream) {
  switch (nt) {
    case 1: return launch<1, BF16>(p, grid, stream);
    case 2: return launch<2, BF16>(p, grid, stream);
    case 4: return launch<4, BF16>(p, grid, stream);
    case 8: return launch<8, BF16>(p, grid, stream);
    default: return launch<16, BF16>(p, grid, stream);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// The fields all three kernels share, for the launch's tokens [m0, m0 + M).
void set_packed(hg::PackedGemm& p, const HybridGemmArgs& a, int64_t m0, int64_t M, int64_t rb, int64_t ct) {
  p.y = static_cast<uint16_t*>(a.y) + m0 * a.N;
  p.M = int(M);
  p.N = int(a.N);
  p.K = int(a.K);
  p.blob = a.blob;
  p.kinds = a.kinds;
  p.offsets = a.offsets;
  p.RB = int(rb);
  p.CT = int(ct);
}

// ---- what the device code loaded for this GPU has ----
// Whether it has the wgmma kernel (built for sm_90a) and sm_90+ code (griddepcontrol, clusters), asked once.
// A build-time test cannot tell: a CUDA LibTorch resets CMAKE_CUDA_ARCHITECTURES and supplies its own -gencode list,
// and a CMake-level check on it disabled the kernel in exactly those builds (found in the end-to-end benchmark).
// A PDL launch of code without griddepcontrol.wait would race with the previous kernel, and a cluster launch of code
// without the cluster reduction would sum nothing, hence the second bit.
// One probe per process (one GPU kind assumed, as for the attribute caches). It runs on a stream of its own with this
// thread's capture mode relaxed, so that a first call inside a CUDA-graph capture (a caller capturing a step without
// an eager warm-up) still probes: on the capturing or legacy stream it would fail, or break the capture, and cache
// "no sm_90 code" for the process (tests/test_hybrid_capture.cc).
__device__ int g_built;
__global__ void built_probe() {
  int v = HYBRID_CODE_RAN;
#ifdef PATCHLLM_HAVE_WGMMA
  v |= HYBRID_CODE_WGMMA;
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  v |= HYBRID_CODE_SM90;
#endif
  g_built = v;
}
int built_features() {
  static const int built = [] {
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);  // capture-safe probe
    int v = 0;
    cudaStream_t s = nullptr;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess) {
      built_probe<<<1, 1, 0, s>>>();
      if (cudaGetLastError() != cudaSuccess ||
          cudaMemcpyFromSymbolAsync(&v, g_built, sizeof(int), 0, cudaMemcpyDeviceToHost, s) != cudaSuccess ||
          cudaStreamSynchronize(s) != cudaSuccess)
        v = 0;
      cudaStreamDestroy(s);
    }
    cudaThreadExchangeStreamCaptureMode(&mode);  // capture-safe probe: the caller's mode back
    return v;
  }();
  return built;
}
bool wgmma_built() { return built_features() & HYBRID_CODE_WGMMA; }
bool sm90_built() { return built_features() & HYBRID_CODE_SM90; }  // griddepcontrol, clusters

// Launch attribute: clusters of S CTAs along x.
cudaLaunchAttribute cluster_attr(int64_t S) {
  cudaLaunchAttribute at;
  at.id = cudaLaunchAttributeClusterDimension;
  at.val.clusterDim.x = unsigned(S);
  at.val.clusterDim.y = at.val.clusterDim.z = 1;
  return at;
}

// ---- wgmma prefill kernel (hybrid_prefill.cuh) ----

template <int BN, bool BF16, int PV>
cudaError_t launch_prefill(const void* x, const hp::Params& p, cudaStream_t stream) {
  using C = hp::Cfg<BN>;
  CUtensorMap map;
  cudaError_t em = hp::encode_x_map<BN, BF16>(&map, x, p);
  if (em != cudaSuccess) return em;
  em = allow_dynamic_smem<hp::hybrid_prefill_kernel<BN, BF16, PV>>(C::SMEM);
  if (em != cudaSuccess) return em;
  const int64_t ctas = int64_t(p.RB) * ((p.M + BN - 1) / BN);  // raster order inside the kernel (int indices)
  if (ctas >= (int64_t(1) << 31)) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(ctas));
  hp::hybrid_prefill_kernel<BN, BF16, PV><<<grid, hp::THREADS, C::SMEM, stream>>>(map, p);
  return cudaGetLastError();
}

// Stream-K prefill (hybrid_prefill.cuh v5) on `grid` CTAs; p.TB, slots and counters set by the caller.
template <bool BF16, int PV>
cudaError_t launch_prefill_sk(const void* x, const hp::Params& p, int grid, cudaStream_t stream) {
  CUtensorMap map;
  cudaError_t e = hp::encode_x_map<hp::SK_BN, BF16>(&map, x, p);
  if (e != cudaSuccess) return e;
  e = allow_dynamic_smem<hp::hybrid_prefill_sk_kernel<BF16, PV>>(hp::SK_SMEM);
  if (e != cudaSuccess) return e;
  hp::hybrid_prefill_sk_kernel<BF16, PV><<<grid, hp::THREADS, hp::SK_SMEM, stream>>>(map, p);
  return cudaGetLastError();
}
// Persistent 2-CTA-cluster prefill (hybrid_prefill.cuh v7 and v8): x map with a 128-token box; as many clusters as
// are resident at once (queried once per process and kernel, as the shared-memory attribute), at most one per unit.
cudaLaunchConfig_t cl_config(cudaLaunchAttribute* attr, cudaStream_t stream) {
  cudaLaunchConfig_t cfg{};
  attr[0] = cluster_attr(hp::CL_CTAS);
  cfg.blockDim = dim3(hp::THREADS);
  cfg.dynamicSmemBytes = hp::CL_SMEM;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}
template <auto KERNEL>
cudaError_t cl_resident(int& out) {
  static int resident = 0;
  if (resident <= 0) {
    cudaError_t e = allow_dynamic_smem<KERNEL>(hp::CL_SMEM);
    if (e != cudaSuccess) return e;
    cudaLaunchAttribute attr[1];
    cudaLaunchConfig_t cfg = cl_config(attr, nullptr);
    cfg.gridDim = dim3(unsigned(hp::CL_CTAS * device_info().sms));
    e = cudaOccupancyMaxActiveClusters(&resident, KERNEL, &cfg);
    if (e != cudaSuccess) return e;
    if (resident <= 0) return cudaErrorInvalidConfiguration;
  }
  out = resident;
  return cudaSuccess;
}
template <auto KERNEL, bool BF16>
cudaError_t launch_cl(const void* x, const hp::Params& p, cudaStream_t stream) {
  CUtensorMap map;
  cudaError_t e = hp::encode_x_map<hp::CL_TOKENS_PER_CTA, BF16>(&map, x, p);
  if (e != cudaSuccess) return e;
  int resident = 0;
  e = cl_resident<KERNEL>(resident);
  if (e != cudaSuccess) return e;
  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t cfg = cl_config(attr, stream);
  const int64_t units = hp::cl_units(p.RB, p.M);
  cfg.gridDim = dim3(unsigned(hp::CL_CTAS * std::min<int64_t>(units, resident)));
  return cudaLaunchKernelEx(&cfg, KERNEL, map, p);
}
template <bool BF16, bool SS>
cudaError_t launch_prefill_cl(const void* x, const hp::Params& p, bool sparse_only, cudaStream_t stream) {
  return sparse_only ? launch_cl<hp::hybrid_prefill_cl_kernel<BF16, SS, true>, BF16>(x, p, stream)
                     : launch_cl<hp::hybrid_prefill_cl_kernel<BF16, SS, false>, BF16>(x, p, stream);
}

// The prefill kernels as v4d or v4i (one wgmma group per slab).
template <int PV>
cudaError_t launch_prefill_pv(const void* x, const hp::Params& p, bool bf16, int bn, int sk_grid,
                              cudaStream_t stream) {
  if (sk_grid > 0)
    return bf16 ? launch_prefill_sk<true, PV>(x, p, sk_grid, stream)
                : launch_prefill_sk<false, PV>(x, p, sk_grid, stream);
  if (bn == 256)
    return bf16 ? launch_prefill<256, true, PV>(x, p, stream) : launch_prefill<256, false, PV>(x, p, stream);
  return bf16 ? launch_prefill<128, true, PV>(x, p, stream) : launch_prefill<128, false, PV>(x, p, stream);
}
cudaError_t launch_prefill_any(const HybridGemmArgs& a, const hp::Params& p, int bn, int sk_grid, cudaStream_t stream) {
  return a.prefill_batched ? launch_prefill_pv<hp::PV_BATCHED>(a.x, p, a.bf16, bn, sk_grid, stream)
                           : launch_prefill_pv<hp::PV_BASE>(a.x, p, a.bf16, bn, sk_grid, stream);
}

// ---- split-K decode kernel (hybrid_decode.cuh) ----
// Auto dispatch: the split-K decode kernel up to DECODE_MAX_M tokens, the wgmma kernels above where they are built
// (sm_90a), else the split-K kernel up to DECODE_MAX_M_NO_WGMMA. Inside the wgmma path, stream-K while the 128-token
// tiles would fill at most half the SMs, else one CTA per tile with the tile width of fewer weighted waves (a 256-token
// tile takes ~1.7× a 128-token one). Measured on the H200, 2026-12-04 (`bench_ops --prefill --quick --ms
// 32,48,64,...,512`, docs/benchmarks/data/prefill_midm_h200.md), × cuBLAS at f = 0 / 0.9:
//   M = 32:  split-K 0.77 / 0.88 (12288×4096), 0.85 / 0.97 (4096×14336); wgmma 128-token tiles 0.58 / 0.63, 0.39 / 0.43
//   M = 64:  12288×4096 (96 tiles): tiles 0.65 / 0.77, split-K 0.58 / 0.63, stream-K 0.55 / 0.59;
//            4096×14336 (32 tiles): stream-K 0.74 / 0.82, split-K 0.66 / 0.72, tiles 0.41 / 0.47
//   M = 128: 12288×4096: tiles 0.91 / 1.07, stream-K 0.70 / 0.80; 4096×14336: stream-K 0.79 / 0.93, tiles 0.43 / 0.49
//   M = 256: 12288×4096: 256-token tiles 0.68 / 0.89, 128-token 0.57 / 0.74; 4096×14336: stream-K 0.72 / 0.85
//   M = 512: 12288×4096: 128-token tiles 0.74 / 0.92, 256-token 0.67 / 0.89; 4096×14336: 128-token 0.83 / 0.99
constexpr int DECODE_MAX_M = 32;
constexpr int DECODE_MAX_M_NO_WGMMA = 128;
constexpr int DECODE_MAX_CTAS_PER_SM = 16;  // largest target the workspace is sized for
// v8's default schedule (HybridGemmArgs::prefill_tail): 1 = whole units, 2 = the cut tail (session 37). Whole units
// until the cut tail has been checked and timed on a GPU (docs/benchmarks/kernels.md, "Session 37").
constexpr int PREFILL_TAIL_DEFAULT = 1;
// Partial slots the decode kernel may use for N rows: nchunks·RB·S ≤ target + nchunks·RB, nchunks ≤ 2 in auto mode.
// Independent of M and K so one workspace sized for the largest M serves every launch.
int64_t decode_part_slots(int64_t N, int sms) {
  return int64_t(DECODE_MAX_CTAS_PER_SM) * sms + 2 * ((N + hg::TILE - 1) / hg::TILE);
}

// The decode kernel instance for nt n-tiles of 8 tokens and the dtype: KB k-tiles per load batch, and at M <= 16
// variant 0 = v3e (runs of four 2:4 k-tiles, RUN4), 1 = v3d (kept to compare against). One mapping for the launch, its
// k-split and its occupancy: f gets a DecodeInst and returns what they need.
// W = warps per CTA: 8 is the k-split kernel; 2 and 4 (v3h, the row split without reduction) exist for v3e only.
template <int NT, int KB_, bool RUN4, bool BF16, int W_ = hd::WARPS>
struct DecodeInst {
  static constexpr int KB = KB_, W = W_, THREADS = W_ * 32;
  static constexpr auto kernel = hd::hybrid_decode_kernel<NT, KB_, BF16, RUN4, W_>;
};
// v3i (hybrid_decode.cuh): v3h's row split over 4-warp CTAs with two load batches in flight per warp; the 4-warp row
// split runs it unless decode_variant 2 asks for v3h (one batch in flight) to compare.
// W = 8: the same two batches in flight for the k-split's 8-warp CTAs, where pipelined_k_split_fits at 9..16 tokens
// and everywhere with decode_variant 3.
template <int NT, bool BF16, int W_ = hd::V3I_WARPS>
struct DecodeInstV3i {
  static constexpr int KB = 2, W = W_, THREADS = W_ * 32;
  static constexpr auto kernel = hd::hybrid_decode_v3i_kernel<NT, BF16, W_>;
};
template <int NT, bool BF16, typename F>
auto with_decode_inst_v3e(int variant, int warps, F&& f) {
  if ((variant == 0 || variant == 3) && warps == hd::V3I_WARPS) return f(DecodeInstV3i<NT, BF16>{});
  if (variant == 3 && warps == hd::WARPS) return f(DecodeInstV3i<NT, BF16, hd::WARPS>{});
  switch (warps) {
    case 2: return f(DecodeInst<NT, 2, true, BF16, 2>{});
    case 4: return f(DecodeInst<NT, 2, true, BF16, 4>{});
    default: return f(DecodeInst<NT, 2, true, BF16>{});
  }
}
template <bool BF16, typename F>
auto with_decode_inst_t(int nt, int variant, int warps, F&& f) {
  switch (nt) {
    case 1: return variant == 1 ? f(DecodeInst<1, 2, false, BF16>{}) : with_decode_inst_v3e<1, BF16>(variant, warps, f);
    case 2: return variant == 1 ? f(DecodeInst<2, 2, false, BF16>{}) : with_decode_inst_v3e<2, BF16>(variant, warps, f);
    case 4: return f(DecodeInst<4, 1, false, BF16>{});
    default: return f(DecodeInst<8, 1, false, BF16>{});
  }
}
template <typename F>
auto with_decode_inst(int nt, int variant, int warps, bool bf16, F&& f) {
  return bf16 ? with_decode_inst_t<true>(nt, variant, warps, f) : with_decode_inst_t<false>(nt, variant, warps, f);
}

template <typename I>
int decode_occupancy() {  // resident CTAs per SM of this instance (the occupancy API, once per process)
  static const int n = [] {
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, I::kernel, I::THREADS, 0) != cudaSuccess)
      (void)cudaGetLastError(), b = 2;
    return std::max(b, 1);
  }();
  return n;
}

// Resident CTAs of this instance when launched as clusters of S CTAs (they fill the GPCs unevenly), 0 if it cannot be
// launched so; the occupancy API, once per S and process.
template <typename I>
int64_t decode_cluster_slots(int64_t S) {
  static int cache[hd::MAX_CLUSTER + 1] = {};
  if (S < 2 || S > hd::MAX_CLUSTER) return 0;
  int& c = cache[S];
  if (c == 0) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(S), 64);
    cfg.blockDim = dim3(hd::THREADS);
    cudaLaunchAttribute at = cluster_attr(S);
    cfg.attrs = &at;
    cfg.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, I::kernel, &cfg) != cudaSuccess) (void)cudaGetLastError(), n = 0;
    c = n > 0 ? n * int(S) : -1;
  }
  return std::max(c, 0);
}

// decode_pipelined_k_split_auto (hybrid_split.h) for the 16-token pipelined k-split's own plan and occupancy.
template <bool BF16>
bool pipelined_k_split_fits(int64_t rb, int64_t ct, int64_t nch, int sms, bool cluster_ok, int64_t max_slots) {
  using I = DecodeInstV3i<2, BF16, hd::WARPS>;
  const int64_t slots = int64_t(decode_occupancy<I>()) * sms;
  const DecodePlan plan =
      decode_plan(rb, ct, nch, I::KB, slots, 0, cluster_ok, decode_cluster_slots<I>, hd::MAX_CLUSTER, max_slots);
  const int64_t resident = plan.cluster ? decode_cluster_slots<I>(plan.split.S) : slots;
  return decode_pipelined_k_split_auto(rb * nch * plan.split.S, resident, sms);
}

}  // namespace

// Workspace: [counters: MAX_KEYS ints, fixed place, shared by both kernels][ranges: G × 2 int64]
// [slots: G × 2 × 128×128 fp32][decode partials: decode_part_slots(N) × 64×128 fp32].
size_t persistent_workspace_bytes(int grid) {
  return size_t(hg::WS_COUNTER_BYTES) + size_t(grid) * 16 + size_t(grid) * 2 * hg::SLOT_FLOATS * 4;
}
size_t hybrid_gemm_workspace_bytes(int64_t M, int64_t N, int grid) {
  (void)M;
  if (grid <= 0) grid = device_info().sms;
  return persistent_workspace_bytes(grid) + size_t(decode_part_slots(N, device_info().sms)) * hd::PART_BYTES;
}

HybridLaunchResult hybrid_gemm_launch(const HybridGemmArgs& a) {
  HybridLaunchResult r;
  if (a.M <= 0 || a.N <= 0 || a.K <= 0 || a.tile_rows != hg::TILE || a.tile_cols != hg::TILE || a.M > (1 << 30) ||
      a.N > (1 << 30) || a.K > 128 * hg::MAX_CONTRIB / 2 ||
      (a.prefill_bn != 0 && a.prefill_bn != 128 && a.prefill_bn != 256) || a.prefill_schedule < 0 ||
      a.prefill_schedule > 3 ||
      (a.decode_warps != 0 && a.decode_warps != 2 && a.decode_warps != 4 && a.decode_warps != 8) ||
      a.decode_variant < 0 || a.decode_variant > 3 || a.prefill_tail < 0 || a.prefill_tail > 2) {
    r.status = HYBRID_ERR_SHAPE;
    return r;
  }
  if (a.K % 8 != 0 || !aligned16(a.x) || !aligned16(a.blob) || !aligned16(a.workspace) ||
      !aligned16(a.prefill_image) || reinterpret_cast<uintptr_t>(a.prefill_order) % 4 != 0) {
    r.status = HYBRID_ERR_ALIGN;
    return r;
  }
  DeviceInfo d = device_info();
  // sm_8x (Ampere, Ada) runs only the split-K kernel (mma.sync / mma.sp, cp.async): the persistent kernel needs
  // bulk copies and the prefill kernel wgmma, both sm_90.
  const bool hopper = d.major >= 9;
  if (d.major < 8 || (!hopper && (a.kernel == 1 || a.kernel == 3))) {
    r.status = d.sms == 0 ? HYBRID_ERR_CUDA : HYBRID_ERR_ARCH;
    r.cuda_error = d.sms == 0 ? int(cudaErrorNoDevice) : 0;
    return r;
  }
  const int grid = a.grid > 0 ? a.grid : d.sms;
  if (a.workspace == nullptr || a.workspace_bytes < hybrid_gemm_workspace_bytes(a.M, a.N, grid)) {
    r.status = HYBRID_ERR_WORKSPACE;
    return r;
  }
  const int64_t rb = (a.N + hg::TILE - 1) / hg::TILE, ct = (a.K + hg::TILE - 1) / hg::TILE;
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  uint8_t* ws = static_cast<uint8_t*>(a.workspace);
  const bool decode = a.kernel == 2 ||
                      (a.kernel == 0 && (!hopper || a.M <= DECODE_MAX_M ||
                                         (a.M <= DECODE_MAX_M_NO_WGMMA && !(d.major == 9 && wgmma_built()))));
  if (decode) {
    const bool pdl = a.pdl && hopper && sm90_built();
    const bool cluster_ok = a.decode_reduction != 0 && hopper && sm90_built();
    const int64_t max_slots = decode_part_slots(a.N, d.sms);
    const int64_t nchunks_all = (a.M + hd::CHUNK_TOKENS - 1) / hd::CHUNK_TOKENS;
    // Chunks per launch: counters (nchunks·RB ≤ MAX_KEYS) and partial slots (nchunks·RB ≤ max_slots) must fit.
    const int64_t per_launch = std::max<int64_t>(1, std::min<int64_t>({nchunks_all, hg::MAX_KEYS / rb, max_slots / rb,
                                                                       65535}));
    for (int64_t c0 = 0; c0 < nchunks_all; c0 += per_launch) {
      const int64_t nch = std::min(per_launch, nchunks_all - c0), m0 = c0 * hd::CHUNK_TOKENS;
      const int64_t Mi = std::min(a.M - m0, nch * hd::CHUNK_TOKENS);
      const int nt = Mi <= 8 ? 1 : Mi <= 16 ? 2 : Mi <= 32 ? 4 : 8;
      hd::Params p;
      set_packed(p, a, m0, Mi, rb, ct);
      p.x = static_cast<const uint16_t*>(a.x) + m0 * a.K;
      p.counters = reinterpret_cast<int*>(ws);
      p.part = reinterpret_cast<float*>(ws + persistent_workspace_bytes(grid));
      // decode_warps 0: the row split (v3i; v3h with decode_variant 2) where decode_row_split_auto says so (at 9..16
      // tokens, unless the cluster reduction is forced).
      const bool auto_rows = a.decode_warps == 0 && nt == 2 && a.decode_variant != 1 &&
                             a.decode_reduction != 1 &&
                             decode_row_split_auto(rb, d.sms, cluster_ok);
      const int warps = a.decode_warps == 2 || a.decode_warps == 4 ? a.decode_warps : auto_rows ? 4 : hd::WARPS;
      // The k-split at 9..16 tokens: two load batches in flight per warp where that plan is one nearly full wave.
      const bool pipelined = a.decode_variant == 0 && a.decode_warps == 0 && nt == 2 && warps == hd::WARPS &&
                             (a.bf16 ? pipelined_k_split_fits<true>(rb, ct, nch, d.sms, cluster_ok, max_slots)
                                     : pipelined_k_split_fits<false>(rb, ct, nch, d.sms, cluster_ok, max_slots));
      const cudaError_t e = with_decode_inst(nt, pipelined ? 3 : a.decode_variant, warps, a.bf16, [&](auto inst) {
        using I = decltype(inst);
        cudaLaunchConfig_t cfg = {};
        if (I::W < hd::WARPS) {  // v3h: the row block's warp slices over WARPS / W CTAs, each the whole K
          p.S = 1;
          p.KPC = int(ct);
          p.cluster = 0;
          cfg.gridDim = dim3(unsigned(hd::WARPS / I::W), unsigned(rb), unsigned(nch));
        } else {
          // The k-split, and (decode_reduction 1 or 2) whether it reduces through a cluster: decode_plan
          // (hybrid_split.h).
          const int64_t target = int64_t(std::min(a.decode_ctas_per_sm, DECODE_MAX_CTAS_PER_SM)) * d.sms;
          const DecodePlan plan = decode_plan(rb, ct, nch, I::KB, int64_t(decode_occupancy<I>()) * d.sms, target,
                                              cluster_ok, decode_cluster_slots<I>, hd::MAX_CLUSTER, max_slots);
          p.S = plan.split.S;
          p.KPC = plan.split.KPC;
          p.cluster = plan.cluster;
          cfg.gridDim = dim3(unsigned(p.S), unsigned(rb), unsigned(nch));
        }
        cfg.blockDim = dim3(I::THREADS);
        cfg.stream = stream;
        cudaLaunchAttribute attr[2];
        cfg.attrs = attr;
        if (pdl) {
          attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
          attr[cfg.numAttrs++].val.programmaticStreamSerializationAllowed = 1;
        }
        if (p.cluster) attr[cfg.numAttrs++] = cluster_attr(p.S);
        return cudaLaunchKernelEx(&cfg, I::kernel, p);
      });
      if (e != cudaSuccess) {
        r.status = HYBRID_ERR_CUDA;
        r.cuda_error = int(e);
        return r;
      }
    }
    return r;
  }
  if (a.kernel == 3 || (a.kernel == 0 && d.major == 9 && wgmma_built())) {
    if (d.major != 9 || !wgmma_built()) {  // wgmma is sm_90a only
      r.status = HYBRID_ERR_ARCH;
      return r;
    }
    hp::Params p;
    set_packed(p, a, 0, a.M, rb, ct);
    const int64_t tb = (a.M + hp::SK_BN - 1) / hp::SK_BN;
    const bool sk = rb * tb <= hg::MAX_KEYS &&  // one counter per tile
                    (a.prefill_schedule == 2 || (a.prefill_schedule == 0 && a.prefill_bn == 0 && 2 * rb * tb <= d.sms));
    if (sk) {
      p.TB = int(tb);
      p.counters = reinterpret_cast<int*>(ws);
      p.slots = reinterpret_cast<float*>(ws + hg::WS_COUNTER_BYTES + size_t(grid) * 16);
      const int g = int(std::min<int64_t>(grid, rb * tb * ((a.K + hp::SLAB_K - 1) / hp::SLAB_K)));
      cudaError_t e = launch_prefill_any(a, p, hp::SK_BN, g, stream);
      if (e != cudaSuccess) {
        r.status = HYBRID_ERR_CUDA;
        r.cuda_error = int(e);
      }
      return r;
    }
    if (a.prefill_schedule == 3) {  // v7: persistent, 2-CTA clusters sharing x (256 tokens per unit)
      const bool ss = a.prefill_image != nullptr;
      if (ss) p.blob = a.prefill_image;  // same offsets, slabs in the descriptor order
      const bool so = a.prefill_all_sparse;
      // v8 where some tile is dense: the pair's all-2:4 slabs first, in five 2:4-sized stages (where every tile is 2:4,
      // v7 has five stages throughout, without v8's indirection)
      if (ss && a.prefill_order && !so) p.order = a.prefill_order;
      p.timeline = a.prefill_timeline;
      cudaError_t e = cudaSuccess;
      if (p.order) {
        // (BF16, TAIL) as template arguments: read at run time, they cost registers in the slab loop
        auto sorted = [&](auto bf16, auto tail) {
          return launch_cl<hp::hybrid_prefill_sorted_kernel<decltype(bf16)::value, decltype(tail)::value>,
                           decltype(bf16)::value>(a.x, p, stream);
        };
        using T = std::true_type;
        using F = std::false_type;
        // The cut tail's sums and flags: a slot (128 × 256 fp32) and a counter per CTA, which the workspace has for
        // `grid` CTAs (zero between launches: each flag is cleared by its reader)
        int resident = 0;
        bool tail = (a.prefill_tail ? a.prefill_tail : PREFILL_TAIL_DEFAULT) == 2;
        if (tail) {
          e = a.bf16 ? cl_resident<hp::hybrid_prefill_sorted_kernel<true, true>>(resident)
                     : cl_resident<hp::hybrid_prefill_sorted_kernel<false, true>>(resident);
          tail = e == cudaSuccess && int64_t(hp::CL_CTAS) * resident <= grid;
        }
        if (tail) {
          p.counters = reinterpret_cast<int*>(ws);
          p.slots = reinterpret_cast<float*>(ws + hg::WS_COUNTER_BYTES + size_t(grid) * 16);
        }
        if (e == cudaSuccess)
          e = a.bf16 ? (tail ? sorted(T(), T()) : sorted(T(), F())) : (tail ? sorted(F(), T()) : sorted(F(), F()));
      } else
        e = a.bf16 ? (ss ? launch_prefill_cl<true, true>(a.x, p, so, stream)
                         : launch_prefill_cl<true, false>(a.x, p, so, stream))
                   : (ss ? launch_prefill_cl<false, true>(a.x, p, so, stream)
                         : launch_prefill_cl<false, false>(a.x, p, so, stream));
      if (e != cudaSuccess) {
        r.status = HYBRID_ERR_CUDA;
        r.cuda_error = int(e);
      }
      return r;
    }
    const int64_t waves128 = (rb * tb + d.sms - 1) / d.sms, waves256 = (rb * ((a.M + 255) / 256) + d.sms - 1) / d.sms;
    const int bn = a.prefill_bn ? a.prefill_bn : (17 * waves256 < 10 * waves128 ? 256 : 128);
    cudaError_t e = launch_prefill_any(a, p, bn, 0, stream);
    if (e != cudaSuccess) {
      r.status = HYBRID_ERR_CUDA;
      r.cuda_error = int(e);
    }
    return r;
  }
  const int nt = tiles_for(a.M);
  const int64_t mt = 8 * nt;
  // One counter per (chunk, row-block): launches of at most MAX_KEYS / rb chunks each.
  const int64_t chunks_per_launch = std::max<int64_t>(1, hg::MAX_KEYS / rb);
  for (int64_t m0 = 0; m0 < a.M; m0 += chunks_per_launch * mt) {
    const int64_t Mi = std::min(a.M - m0, chunks_per_launch * mt);
    hg::Params p;
    set_packed(p, a, m0, Mi, rb, ct);
    p.x = static_cast<const uint16_t*>(a.x) + m0 * a.K;
    p.nchunks = int((Mi + mt - 1) / mt);
    p.counters = reinterpret_cast<int*>(ws);
    p.ranges = reinterpret_cast<int64_t*>(ws + hg::WS_COUNTER_BYTES);
    p.slots = reinterpret_cast<float*>(ws + hg::WS_COUNTER_BYTES + size_t(grid) * 16);
    cudaError_t e = a.bf16 ? launch_nt<true>(nt, p, grid, stream) : launch_nt<false>(nt, p, grid, stream);
    if (e != cudaSuccess) {
      r.status = HYBRID_ERR_CUDA;
      r.cuda_error = int(e);
      return r;
    }
  }
  return r;
}

int hybrid_device_code() { return built_features(); }

const char* hybrid_status_string(int status) {
  switch (status) {
    case HYBRID_OK: return "ok";
    case HYBRID_ERR_SHAPE:
      return "unsupported shape or option (need 128x128 tiles, 0 < M, N < 2^30, 0 < K <= 32768; prefill_bn 0, 128 "
             "or 256; prefill_schedule 0..3; prefill_tail 0..2; decode_warps 0, 2, 4 or 8; decode_variant 0..3)";
    case HYBRID_ERR_ALIGN: return "x, weight blob and workspace must be 16-byte aligned and K % 8 == 0";
    case HYBRID_ERR_ARCH:
      return "the hybrid kernels need an sm_80 or newer GPU, and the persistent (1) and wgmma (3) kernels sm_90";
    case HYBRID_ERR_WORKSPACE: return "workspace missing or too small";
    case HYBRID_ERR_CUDA: return "CUDA runtime error";
    default: return "unknown status";
  }
}

const char* hybrid_cuda_error_string(int cuda_error) { return cudaGetErrorString(cudaError_t(cuda_error)); }

}  // namespace patchllm
