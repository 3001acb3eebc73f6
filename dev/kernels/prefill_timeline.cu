// dev/kernels: where v8's time goes between units. Each CTA's first consumer thread stamps %globaltimer at the
// start and end of every unit it runs (hybrid_prefill_sorted_kernel, built with PATCHLLM_PREFILL_TIMELINE), and this
// program turns the stamps of one launch into: the span, each cluster's busy time, the idle fraction of the
// cluster-time (what a perfect balance of whole units, or stream-K without fix-up cost, could win at most), the
// tail (span minus the earliest cluster finish), and the mean unit time of the lightest and heaviest half of the
// row-block pairs (dense work per pair: the slabs outside section A). "balanced" is the units' summed time over the
// clusters (what a perfect split would take), "timer step" the smallest positive difference between stamps (if it
// reads ~1000 ns, %globaltimer ticks in microseconds on that GPU and the unit times carry that much).
//
// Why: session 35's time model put the static schedule 1.4-5.7% above total work / 66 at f = 0.9 (wave
// quantisation and heavy pairs in the last wave), and 4096x4096 at M = 2048 stays ~5% short of 1.4x cuBLAS. This
// measures that loss instead of modelling it (session 36: for each unit order and schedule; session 37: whole units
// against the cut tail, whose pieces count as units here, the unit times from whole units only).
// Build (GPU machine, repo root):
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc -Ibench \
//     -DPATCHLLM_PREFILL_TIMELINE dev/kernels/prefill_timeline.cu src/ops/hybrid_gemm.cu -lcublas \
//     -o /tmp/prefill_timeline
// Run: /tmp/prefill_timeline [NxK:M ...] (default: the seven issue shapes at M = 2048 and 4096x4096 at 8192),
// f = 0.9 (PATCHLLM_TL_F to change). Medians over 9 launches after 3 warm-ups; weights not rotated (the stamps are
// per unit, so L2 reuse between launches shifts all units alike).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_ops_common.h"
#include "ops/hybrid_gemm.h"
#include "ops/hybrid_prefill.cuh"  // (TIMELINE_UNITS, cl_units)

#ifndef PATCHLLM_PREFILL_TIMELINE
#error "build with -DPATCHLLM_PREFILL_TIMELINE (hybrid_gemm.cu too), else the kernel writes no stamps"
#endif

using namespace patchllm;

namespace {
struct Stats {
  double span, idle, tail, light, heavy, balanced, step;  // step: the timer's smallest positive step seen, ns
};
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> cases;
  for (int i = 1; i < argc; ++i) cases.push_back(argv[i]);
  if (cases.empty())
    cases = {"4096x4096:2048",  "12288x4096:2048", "22016x4096:2048", "4096x11008:2048",
             "6144x4096:2048",  "28672x4096:2048", "4096x14336:2048", "4096x4096:8192"};
  struct Case {
    long long N, K, M;
  };
  std::vector<Case> parsed;
  for (const std::string& cs : cases) {
    Case c{};
    if (std::sscanf(cs.c_str(), "%lldx%lld:%lld", &c.N, &c.K, &c.M) != 3 || c.N <= 0 || c.K <= 0 || c.M <= 0) {
      std::fprintf(stderr, "prefill_timeline: bad case '%s' (want NxK:M)\n", cs.c_str());
      return 2;
    }
    parsed.push_back(c);
  }
  const double f = std::getenv("PATCHLLM_TL_F") ? std::atof(std::getenv("PATCHLLM_TL_F")) : 0.9;
  if (!(f >= 0 && f <= 1)) {
    std::fprintf(stderr, "prefill_timeline: PATCHLLM_TL_F must be in [0, 1]\n");
    return 2;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9) {
    std::fprintf(stderr, "prefill_timeline: needs an sm_90 GPU (v8 is Hopper-only)\n");
    return 2;
  }
  std::printf("# %s, %d SMs; f = %.2f; medians of 9 launches\n", prop.name, prop.multiProcessorCount, f);
  std::printf("| shape | M | schedule | units | span us | idle %% | tail us | unit us light / heavy half "
              "| balanced us | x span | timer step ns |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  int bad = 0;
  for (const Case& pc : parsed) {
    const long long N = pc.N, K = pc.K, M = pc.M;
    const std::string cs = std::to_string(N) + "x" + std::to_string(K) + ":" + std::to_string(M);
    bench::Problem P = bench::make_problem(N, K, f, 7, true, true);
    bench::PrefillDevice D = bench::prefill_device(P, M);
    std::vector<uint32_t> ord(size_t(hybrid_prefill_order_words(P.layout)));  // (the host copy, for the pairs' work)
    hybrid_prefill_order_raw(P.layout, ord.data());
    const int64_t stride = hybrid_prefill_order_stride(P.layout), nslab = (K + 63) / 64;
    const int RBP = hp::cl_row_groups(int(P.layout.row_blocks)), TB = int((M + hp::CL_BN - 1) / hp::CL_BN);
    const int units = hp::cl_units(int(P.layout.row_blocks), int(M));
    // dense work of pair g: its slabs outside section A; the lighter half of the pairs by it
    std::vector<int64_t> dense(static_cast<size_t>(RBP));
    for (int g = 0; g < RBP; ++g) dense[size_t(g)] = nslab - int64_t(ord[size_t(g * stride)]);
    std::vector<int64_t> sorted_dense = dense;
    std::sort(sorted_dense.begin(), sorted_dense.end());
    const int64_t cut = sorted_dense[sorted_dense.size() / 2];
    void *dy = nullptr, *dws = nullptr;
    const size_t wsb = hybrid_gemm_workspace_bytes(M, N);
    cudaMalloc(&dy, size_t(M * N) * 2);
    cudaMalloc(&dws, wsb);
    cudaMemset(dws, 0, wsb);
    const int ctas = 2 * prop.multiProcessorCount;  // at least the grid (2 x clusters resident)
    const size_t tl_words = size_t(ctas) * hp::TIMELINE_UNITS * 3;
    unsigned long long* dtl = nullptr;
    cudaMalloc(&dtl, tl_words * 8);
    std::vector<unsigned long long> tl(tl_words);
    struct Variant {
      const char* name;
      int tail;
    };
    for (const Variant v : {Variant{"whole units", 1}, Variant{"cut tail", 2}}) {
      HybridGemmArgs a;
      a.x = D.x, a.y = dy, a.M = M, a.N = N, a.K = K;
      a.blob = D.image, a.kinds = D.kinds, a.offsets = D.offsets, a.workspace = dws, a.workspace_bytes = wsb;
      a.kernel = 3, a.prefill_schedule = 3, a.prefill_image = D.image, a.prefill_order = D.order;
      a.prefill_tail = v.tail, a.prefill_timeline = dtl;
      std::vector<Stats> st;
      bool ok = true;
      for (int rep = 0; rep < 12 && ok; ++rep) {
        cudaMemset(dtl, 0, tl_words * 8);
        const HybridLaunchResult r = hybrid_gemm_launch(a);
        const cudaError_t e = cudaDeviceSynchronize();
        if (r.status != HYBRID_OK || e != cudaSuccess) {
          std::fprintf(stderr, "prefill_timeline: %s %s: status %d, %s\n", cs.c_str(), v.name, r.status,
                       cudaGetErrorString(e));
          ok = false;
          break;
        }
        if (rep < 3) continue;
        cudaMemcpy(tl.data(), dtl, tl_words * 8, cudaMemcpyDeviceToHost);
        // per cluster (CTAs 2c, 2c + 1): first start, last end; units from rank 0's stamps
        unsigned long long t0 = ~0ull, t1 = 0;
        std::vector<unsigned long long> stamps;
        std::vector<double> busy, finish;
        double light = 0, heavy = 0, sum_units = 0;
        int nl = 0, nh = 0, seen = 0;
        for (int c = 0; c < ctas / 2; ++c) {
          unsigned long long s = ~0ull, en = 0;
          for (int rk = 0; rk < 2; ++rk)
            for (int k = 0; k < hp::TIMELINE_UNITS; ++k) {
              const unsigned long long* e3 = tl.data() + (size_t(2 * c + rk) * hp::TIMELINE_UNITS + k) * 3;
              if (e3[1] == 0) continue;
              s = std::min(s, e3[0]), en = std::max(en, e3[1]);
              stamps.push_back(e3[0]), stamps.push_back(e3[1]);
              if (rk) continue;
              const double us = double(e3[1] - e3[0]) * 1e-3;
              const int piece = int(e3[2] >> 30);  // 0 whole, 1 a cut unit's head, 2 its tail
              sum_units += us;
              seen += piece != 2;
              if (piece != 0) continue;
              const RasterPos rp = grouped_raster(int(e3[2] & 0x3fffffffu), RBP, TB, hp::GROUP / hp::CL_CTAS);
              (dense[size_t(rp.unit)] <= cut ? light : heavy) += us;
              ++(dense[size_t(rp.unit)] <= cut ? nl : nh);
            }
          if (en == 0) continue;
          t0 = std::min(t0, s), t1 = std::max(t1, en);
          busy.push_back(double(en - s) * 1e-3);
          finish.push_back(double(en) * 1e-3);
        }
        if (seen != units) {  // every unit stamped once, whole or its head (past TIMELINE_UNITS items: not here)
          std::fprintf(stderr, "prefill_timeline: %s %s: %d units stamped, %d expected\n", cs.c_str(), v.name, seen,
                       units);
          ok = false;
          break;
        }
        const double span = double(t1 - t0) * 1e-3, first_done = *std::min_element(finish.begin(), finish.end());
        double sb = 0, step = 0;
        for (double b : busy) sb += b;
        std::sort(stamps.begin(), stamps.end());
        for (size_t i = 1; i < stamps.size(); ++i)
          if (stamps[i] > stamps[i - 1] && (step == 0 || double(stamps[i] - stamps[i - 1]) < step))
            step = double(stamps[i] - stamps[i - 1]);
        st.push_back({span, 100.0 * (1.0 - sb / (double(busy.size()) * span)), double(t1) * 1e-3 - first_done,
                      nl ? light / nl : 0.0, nh ? heavy / nh : 0.0, sum_units / double(busy.size()), step});
      }
      bad += !ok;
      if (!ok) continue;
      auto med = [&](double Stats::*m) {
        std::vector<double> vs;
        for (const Stats& s : st) vs.push_back(s.*m);
        return bench::median(vs);
      };
      std::printf("| %lldx%lld | %lld | %s | %d | %.1f | %.1f | %.1f | %.2f / %.2f | %.1f | %.3f | %.0f |\n", N, K, M,
                  v.name, units, med(&Stats::span), med(&Stats::idle), med(&Stats::tail), med(&Stats::light),
                  med(&Stats::heavy), med(&Stats::balanced), med(&Stats::balanced) / med(&Stats::span),
                  med(&Stats::step));
      std::fflush(stdout);
    }
    for (void* p : {dy, dws, (void*)dtl}) cudaFree(p);
    D.release();
  }
  return bad != 0;
}
