// dev/kernels: prefill v8 (hybrid_prefill_sorted_kernel, session 31) against an fp64 reference, beside v7's SS form.
//
// Why: v8 reorders each row-block pair's slabs (all-2:4 slabs first, in five 2:4-sized stages; the rest in four), so
// its sums are not v4d's bit for bit and dev/kernels/prefill_ss.cu's bitwise check does not apply. This file checks
// both kernels through hybrid_gemm_launch against the masked weight in fp64 on small ragged cases: an odd row-block
// count (the pad CTA runs its partner's slabs), a ragged last K tile (one slab), every mix from all dense to all 2:4,
// outputs poisoned with NaN before each launch. Small enough for compute-sanitizer. The last three cases give each
// cluster several units (the stage rings run on across units), one of them units of a single slab. Where the last
// wave is partial (units % clusters != 0, with more than one wave: the 4100-, 9000- and 2048-token cases on a
// 132-SM GPU) v8 cuts its tail (session 37): it runs twice in a row, so the second launch finds the flags the first
// left, and every workspace counter must be zero after it; then v8 with whole units only, and the number of outputs
// where the two differ (the cut units sum in another order: non-zero shows the cut ran).
// Build (GPU machine, repo root):
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc -Ibench \
//     dev/kernels/prefill_sorted.cu src/ops/hybrid_gemm.cu -lcublas -o /tmp/prefill_sorted
// Run: /tmp/prefill_sorted (exit 1 on any failure); under compute-sanitizer --tool memcheck / synccheck.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_ops_common.h"
#include "ops/hybrid_gemm.cuh"  // (WS_COUNTER_BYTES)
#include "ops/hybrid_gemm.h"

using namespace patchllm;

int main() {
  struct Case {
    int64_t N, K, M;
    double f;
  };
  int bad = 0;
  // 2900 rows: 23 row blocks (a pad CTA); K 520 and 1096: a last tile with one slab; f 0 … 1.
  for (const Case c : {Case{2900, 520, 700, 0.5}, Case{384, 1096, 300, 0.9}, Case{1000, 1096, 513, 1.0},
                       Case{640, 768, 260, 0.0}, Case{2900, 1096, 1030, 0.7}, Case{2900, 520, 4100, 0.9},
                       Case{1000, 64, 9000, 1.0}, Case{4096, 4096, 2048, 0.9}}) {
    bench::Problem P = bench::make_problem(c.N, c.K, c.f, 7, true, true);
    std::vector<uint16_t> md = bench::masked_dense(P);
    bench::PrefillDevice D = bench::prefill_device(P, c.M);
    const std::vector<uint16_t>& x = D.x_host;
    void *dy = nullptr, *dws = nullptr;
    const size_t wsb = hybrid_gemm_workspace_bytes(c.M, c.N);
    cudaMalloc(&dy, size_t(c.M * c.N) * 2);
    cudaMalloc(&dws, wsb);
    cudaMemset(dws, 0, wsb);
    std::vector<double> ref(size_t(c.M * c.N));
    bench::parallel_for(c.M, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t n = 0; n < c.N; ++n) {
          double s = 0;
          for (int64_t k = 0; k < c.K; ++k)
            s += double(bench::bf16_to_f32(x[m * c.K + k])) * bench::bf16_to_f32(md[n * c.K + k]);
          ref[m * c.N + n] = s;
        }
    });
    // v: 0 = v7 SS (four stages), 1 = v7 SS five stages (f = 1 only: prefill_all_sparse), 2 and 3 = v8 with its
    // tail cut, twice; 4 = v8 with whole units only
    const char* names[] = {"v7 SS", "v7 SS 5st", "v8 cut tail", "v8 cut tail again", "v8 whole units"};
    std::vector<uint16_t> y_cut;
    for (int v = 0; v < 5; ++v) {
      if (v == 1 && c.f != 1.0) continue;
      HybridGemmArgs a;
      a.x = D.x, a.y = dy, a.M = c.M, a.N = c.N, a.K = c.K;
      a.blob = D.image, a.kinds = D.kinds, a.offsets = D.offsets, a.workspace = dws, a.workspace_bytes = wsb;
      a.kernel = 3, a.prefill_schedule = 3, a.prefill_image = D.image;
      a.prefill_order = v >= 2 ? D.order : nullptr;  // (prefill_all_sparse off: v8 at f = 1 too)
      a.prefill_all_sparse = v == 1;
      a.prefill_tail = v == 4 ? 1 : v >= 2 ? 2 : 0;
      cudaMemset(dy, 0xff, size_t(c.M * c.N) * 2);  // NaN in bf16
      const HybridLaunchResult r = hybrid_gemm_launch(a);
      const cudaError_t e = cudaDeviceSynchronize();
      std::vector<uint16_t> y(size_t(c.M * c.N));
      cudaMemcpy(y.data(), dy, y.size() * 2, cudaMemcpyDeviceToHost);
      double num = 0, den = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        const double d = double(bench::bf16_to_f32(y[i])) - ref[i];
        num += d * d, den += ref[i] * ref[i];
      }
      const double rel = std::sqrt(num / den);  // NaN left anywhere fails too
      std::vector<int> ctr(size_t(hg::WS_COUNTER_BYTES / 4));
      cudaMemcpy(ctr.data(), dws, ctr.size() * 4, cudaMemcpyDeviceToHost);
      int64_t dirty = 0;
      for (int x : ctr) dirty += x != 0;
      const bool ok = r.status == HYBRID_OK && e == cudaSuccess && rel < 1e-2 && dirty == 0;
      bad += !ok;
      if (v == 3) y_cut = y;
      std::string vs;
      if (v == 4) {
        int64_t differ = 0;
        for (size_t i = 0; i < y.size(); ++i) differ += y[i] != y_cut[i];
        vs = ", differs from the cut tail's in " + std::to_string(differ) + " outputs";
      }
      std::printf("%s N=%lld K=%lld M=%lld f=%.2f %s: status %d cuda %d rel %.3e, counters left non-zero %lld%s\n",
                  ok ? "ok  " : "FAIL", (long long)c.N, (long long)c.K, (long long)c.M, c.f, names[v], r.status,
                  int(e), rel, (long long)dirty, vs.c_str());
    }
    for (void* p : {dy, dws}) cudaFree(p);
    D.release();
  }
  std::printf("prefill_sorted: %d failures\n", bad);
  return bad != 0;
}
