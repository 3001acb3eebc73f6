// dev/kernels: how fast can this GPU stream a decode weight (read once, ~60 MB), by load mechanism?
//
// Why: the decode kernel (src/ops/hybrid_decode.cuh) streams 2.5 TB/s at M = 1 and 2.2 at M = 16 (f = 0.9, H100),
// and neither more CTAs per SM (the k-split sweep) nor removing its MMAs or its x staging (tools/ops_gpu_decode_diag.sh,
// session 24) moves that much. A copy of the kernel with both removed streamed no faster. So the question is the load
// pattern itself: per-warp register batches of 16-byte loads with a CTA barrier per batch, against the same bytes with
// two batches in flight per warp, without the barrier, as a plain grid-stride read, and as 1-D bulk copies into a
// shared-memory ring (the copy engine, registers free). No MMA, no x: loads and an XOR of what arrives, so each line is
// the ceiling of a kernel built on that mechanism.
//
// Run: stream_probe [MB] (default 61: the f = 0.9 blob of 12288×4096). Buffers rotated past L2 (8 copies); median of
// 15 batches of launches; prints the bytes each variant reads (its share per warp or CTA is rounded down to whole
// batches), µs, TB/s and the fraction of the best rate.
// Measured (session 24, docs/benchmarks/data/stream_probe_h100.md, _h200.md), 61 MB, 192 CTAs × 4 warps (v3h's grid
// at 12288×4096): one 8 KB batch in flight per warp 2.23 TB/s on the H100 (2.60 H200), two 2.67 (3.54), a
// grid-stride read 2.65 (3.47), the bulk-copy ring 2.65 (3.51). The barrier per batch costs nothing.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench_ops_common.h"
#include "ops/hybrid_decode.cuh"

namespace {

using namespace patchllm;
// The decode kernel's own load and mbarrier helpers, so the probe measures the same instructions.
using hd::ld_stream16;
using hg::mbar_arrive;
using hg::mbar_expect_tx;
using hg::mbar_init;
using hg::mbar_wait;
using hg::policy_evict_first;
__device__ __forceinline__ uint32_t fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// Grid-stride: U independent 16-byte loads per thread per step.
template <int U>
__global__ void __launch_bounds__(256) grid_stride(const uint4* __restrict__ src, int64_t n16, uint32_t* out) {
  const uint64_t pol = policy_evict_first();
  const int64_t stride = int64_t(gridDim.x) * blockDim.x, t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t acc = 0;
  int64_t i = t;
  for (; i + (U - 1) * stride < n16; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = ld_stream16(src + i + u * stride, pol);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= fold(v[u]);
  }
  for (; i < n16; i += stride) acc ^= fold(ld_stream16(src + i, pol));
  out[t] = acc;
}

// The decode kernel's pattern: each warp owns a contiguous range and reads it in batches of B 16-byte loads per lane
// (B·512 bytes per warp instruction group), all issued before any is used. DB = 2 issues batch i+1 before consuming
// batch i (two batches in flight). SYNC: a CTA barrier after each batch, as the x staging imposes.
template <int B, int DB, bool SYNC>
__global__ void warp_batches(const uint8_t* __restrict__ src, int64_t per_warp, uint32_t* out) {
  const uint64_t pol = policy_evict_first();
  const int lane = threadIdx.x & 31;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const uint8_t* base = src + warp * per_warp + lane * 16;
  const int64_t nb = per_warp / (B * 512);
  uint32_t acc = 0;
  uint4 a[B], b[B];
  auto load = [&](uint4(&r)[B], int64_t i) {
#pragma unroll
    for (int j = 0; j < B; ++j) r[j] = ld_stream16(base + i * B * 512 + j * 512, pol);
  };
  auto use = [&](const uint4(&r)[B]) {
#pragma unroll
    for (int j = 0; j < B; ++j) acc ^= fold(r[j]);
  };
  if (DB == 1) {
    for (int64_t i = 0; i < nb; ++i) {
      load(a, i);
      use(a);
      if (SYNC) __syncthreads();
    }
  } else {
    if (nb > 0) load(a, 0);
    for (int64_t i = 0; i < nb; i += 2) {
      if (i + 1 < nb) load(b, i + 1);
      use(a);
      if (SYNC) __syncthreads();
      if (i + 1 >= nb) break;
      if (i + 2 < nb) load(a, i + 2);
      use(b);
      if (SYNC) __syncthreads();
    }
  }
  out[(int64_t(blockIdx.x) * blockDim.x + threadIdx.x)] = acc;
}

// Bulk-copy ring: one producer thread per CTA copies CHUNK-byte pieces of the CTA's contiguous range into STAGES
// shared-memory slots (cp.async.bulk, L2 evict-first); W consumer warps wait for a slot, read it (16 bytes per lane
// per 512, ld.shared) and release it.
template <int STAGES, int CHUNK, int W>
__global__ void __launch_bounds__((W + 1) * 32) bulk_ring(const uint8_t* __restrict__ src, int64_t per_cta,
                                                          uint32_t* out) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + STAGES * CHUNK);
  uint64_t* empty = full + STAGES;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], W);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const uint8_t* base = src + int64_t(blockIdx.x) * per_cta;
  const int64_t nc = per_cta / CHUNK;
  uint32_t acc = 0;
  if (warp == W) {
    if (lane == 0) {
      const uint64_t pol = policy_evict_first();
      for (int64_t c = 0; c < nc; ++c) {
        const int s = int(c % STAGES);
        if (c >= STAGES) mbar_wait(&empty[s], uint32_t((c / STAGES - 1) & 1));
        mbar_expect_tx(&full[s], CHUNK);
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], "
            "%4;" ::"r"(hg::smem_addr(smem + s * CHUNK)),
            "l"(base + c * CHUNK), "r"(CHUNK), "r"(hg::smem_addr(&full[s])), "l"(pol)
            : "memory");
      }
    }
  } else {
    for (int64_t c = 0; c < nc; ++c) {
      const int s = int(c % STAGES);
      mbar_wait(&full[s], uint32_t((c / STAGES) & 1));
      const uint4* slot = reinterpret_cast<const uint4*>(smem + s * CHUNK);
      for (int i = threadIdx.x; i < CHUNK / 16; i += W * 32) acc ^= fold(slot[i]);
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[s]);
    }
  }
  out[int64_t(blockIdx.x) * blockDim.x + threadIdx.x] = acc;
}

// Kernel instances as types, so the launch helpers in main can take them as arguments.
template <int B_, int DB, bool SYNC>
struct WB {
  static constexpr int B = B_;
  static constexpr auto k = warp_batches<B_, DB, SYNC>;
};
template <int STAGES_, int CHUNK_, int W_>
struct RB {
  static constexpr int STAGES = STAGES_, CHUNK = CHUNK_, W = W_;
  static constexpr auto k = bulk_ring<STAGES_, CHUNK_, W_>;
};

}  // namespace

int main(int argc, char** argv) {
  const int64_t mb = argc > 1 ? std::atoll(argv[1]) : 61;
  const int64_t bytes = mb << 20;
  cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  const int rot = 8;
  std::vector<uint8_t*> bufs(rot);
  for (auto& b : bufs) {
    BENCH_CUDA(cudaMalloc(&b, size_t(bytes)));
    BENCH_CUDA(cudaMemset(b, 0x5a, size_t(bytes)));
  }
  uint32_t* out;
  BENCH_CUDA(cudaMalloc(&out, size_t(64) << 20));
  std::printf("device %s, %d SMs, %lld MB per launch, %d copies\n", prop.name, sms, (long long)mb, rot);
  struct Res {
    std::string name;
    double us, bytes;  // bytes the variant reads: its per-warp / per-CTA share is rounded down to whole batches
  };
  std::vector<Res> res;
  auto run = [&](const std::string& name, int64_t read, const std::function<void(const uint8_t*)>& launch) {
    const double us = bench::time_launches([&](int i) { launch(bufs[i]); }, rot);
    BENCH_CUDA(cudaGetLastError());
    res.push_back({name, us, double(read)});
  };
  const int64_t n16 = bytes / 16;
  for (int per_sm : {4, 8})
    run("grid-stride U=8, " + std::to_string(per_sm) + " CTAs/SM x 256", bytes, [&](const uint8_t* s) {
      grid_stride<8><<<sms * per_sm, 256>>>(reinterpret_cast<const uint4*>(s), n16, out);
    });
  run("grid-stride U=16, 4 CTAs/SM x 256", bytes, [&](const uint8_t* s) {
    grid_stride<16><<<sms * 4, 256>>>(reinterpret_cast<const uint4*>(s), n16, out);
  });
  // Warp batches: 768 warps in 192 CTAs of 4 (v3h at 12288×4096) and 1056 warps in 264 CTAs of 4; B = 16 (a dense
  // KB = 2 batch, 8 KB per warp) and 8.
  auto warps_case = [&](int ctas, int w, auto inst, const char* what) {
    using I = decltype(inst);
    const int64_t nw = int64_t(ctas) * w, per = bytes / nw / (I::B * 512) * (I::B * 512);
    if (per == 0) return;  // less than one batch per warp
    run(std::string(what) + ", " + std::to_string(ctas) + " CTAs x " + std::to_string(w) + " warps", per * nw,
        [&, per](const uint8_t* s) { I::k<<<ctas, w * 32>>>(s, per, out); });
  };
  for (int ctas : {192, 264}) {
    warps_case(ctas, 4, WB<16, 1, true>{}, "batches 8 KB, 1 in flight, barrier (decode v3h)");
    warps_case(ctas, 4, WB<16, 1, false>{}, "batches 8 KB, 1 in flight, no barrier");
    warps_case(ctas, 4, WB<16, 2, true>{}, "batches 8 KB, 2 in flight, barrier");
    warps_case(ctas, 4, WB<16, 2, false>{}, "batches 8 KB, 2 in flight, no barrier");
    warps_case(ctas, 4, WB<8, 2, true>{}, "batches 4 KB, 2 in flight, barrier");
  }
  warps_case(528, 8, WB<16, 1, true>{}, "batches 8 KB, 1 in flight, barrier");
  warps_case(264, 8, WB<16, 2, true>{}, "batches 8 KB, 2 in flight, barrier");
  // Bulk ring: STAGES × CHUNK per CTA, one or two CTAs per SM.
  auto ring_case = [&](int per_sm, auto inst, const char* what) {
    using I = decltype(inst);
    const int ctas = sms * per_sm;
    const int64_t per = bytes / ctas / I::CHUNK * I::CHUNK;
    const int smem = I::STAGES * I::CHUNK + 2 * I::STAGES * 8;
    BENCH_CUDA(cudaFuncSetAttribute(I::k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    run(std::string(what) + ", " + std::to_string(per_sm) + " CTA/SM", per * ctas,
        [&, per, ctas, smem](const uint8_t* s) { I::k<<<ctas, (I::W + 1) * 32, smem>>>(s, per, out); });
  };
  ring_case(1, RB<8, 16384, 8>{}, "bulk ring 8 x 16 KB");
  ring_case(1, RB<12, 16384, 8>{}, "bulk ring 12 x 16 KB");
  ring_case(1, RB<6, 32768, 8>{}, "bulk ring 6 x 32 KB");
  ring_case(2, RB<4, 16384, 4>{}, "bulk ring 4 x 16 KB");
  ring_case(2, RB<8, 16384, 8>{}, "bulk ring 8 x 16 KB");
  double best = 0;
  for (const Res& r : res) best = std::max(best, r.bytes / r.us);
  std::printf("| load mechanism | MB read | µs | TB/s | × best |\n|---|---|---|---|---|\n");
  for (const Res& r : res)
    std::printf("| %s | %.1f | %.1f | %.2f | %.2f |\n", r.name.c_str(), r.bytes / (1 << 20), r.us, r.bytes / r.us * 1e-6,
                r.bytes / r.us / best);
  return 0;
}
