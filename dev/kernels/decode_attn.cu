// dev/kernels: decode attention (one new token per sequence over its KV cache) for the static decode step, bf16.
//
// Why: the static decode step attends with SDPA over the whole cache capacity under a mask, and copies the output
// from [B, H, 1, D] to token-major order. A kernel that reads only the filled slots (lo..pos, pos read on the device so
// a CUDA graph can hold the launch) and writes token-major removes both. v1 went into the model in session 18 (commit
// da9028e) and was reverted: correct, neutral at a 16-token context, but at a 2000-token context graph decode through
// it was slower than eager decode through SDPA (docs/BENCHMARKS.md §4, session 18). This file times the versions on
// their own before any goes back into src/ops/layer_kernels.cu.
//   v1: one block of 4 warps per (sequence·head, 256-slot chunk); each warp walks every 4th slot with an online
//       softmax, lanes splitting D. Per slot: a k load, a 5-step shuffle reduction, then a v load, all dependent, so
//       a warp has about one row in flight.
//   v2: two phases per chunk. QK: each warp scores 4 slots per step (4 independent loads and reductions in flight),
//       scores to shared memory. Softmax over the chunk's scores (block max and sum). PV: thread t owns output
//       elements, loops over the chunk's slots 4 at a time (independent coalesced loads).
// Measured in session 19 (H100; docs/BENCHMARKS.md §4, "End to end"): v2 is slower than v1 in every case, and both
// are slower than SDPA on a multi-head cache (v1 15–48% of HBM bandwidth at batch 1, SDPA 37–62%). Neither is used;
// the grouped-query cost they would have removed is gone from the model by folding query heads into rows instead.
// Both write per-chunk partials (max, sum, acc) that one combine launch merges (the same combine for both); with one
// chunk the kernel writes the output itself.
//
//   v3: the model's kernel (src/ops/layer_kernels.cu, launch_decode_attention, session 26): up to 8 query heads of a
//       kv head per CTA (k/v read once per group), 8 loads of 16 bytes per lane per round with the next round's in
//       flight, scores to shared memory, chunks of 128..1024 slots (auto: about two CTAs per SM) and a combine launch
//       when there are several. Timed as the launcher chooses ("auto"), then with every pair of heads per CTA
//       (g1..g8: fewer heads, more CTAs, k/v read more often) and chunk (c64..c1024) it takes (session 27).
// Run: decode_attn [B H Hk D len cap]... (no arguments: the LLaMA-2-7B / LLaMA-3-8B decode cases). Each case is
// checked against a float64 CPU reference (slots past pos are NaN in the device cache, so reading them fails the
// check), then timed (median of 15 batches, caches rotated past L2) against the filled KV bytes' HBM bound.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bench_ops_common.h"
#include "ops/layer_kernels.h"

namespace {

constexpr int CHUNK = 256, WARPS = 4, THREADS = WARPS * 32;

struct Args {
  int B, H, Hk, D, cap;
  const __nv_bfloat16 *q, *k, *v;  // q [B, H, D]; caches [B, Hk, cap, D]
  const int64_t* pos;
  float scale;
  float* partial;  // [B·H, chunks, D + 2]: acc..., max, sum
  __nv_bfloat16* y;  // [B, H·D]
};

__device__ __forceinline__ float bf(const __nv_bfloat16 v) { return __bfloat162float(v); }

// The block's merged (max, sum, acc[D]) for this chunk: to y when there is one chunk, else to the partials.
__device__ __forceinline__ void emit(const Args& a, int64_t bh, int d, float m, float l, float acc) {
  if (gridDim.y == 1) {
    if (d < a.D) a.y[bh * a.D + d] = __float2bfloat16(acc / l);
    return;
  }
  float* part = a.partial + (bh * gridDim.y + blockIdx.y) * (a.D + 2);
  if (d < a.D) part[d] = acc;
  if (d == 0) part[a.D] = m, part[a.D + 1] = l;
}

template <int E>
__global__ void __launch_bounds__(THREADS) attn_v1(Args a) {
  const int64_t bh = blockIdx.x, b = bh / a.H, h = bh % a.H, kvh = h / (a.H / a.Hk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t pos = *a.pos, c0 = int64_t(blockIdx.y) * CHUNK;
  const int64_t last = min(pos, min(c0 + CHUNK, int64_t(a.cap)) - 1);
  float q[E], acc[E];
  for (int j = 0; j < E; ++j) q[j] = bf(a.q[bh * a.D + lane * E + j]), acc[j] = 0;
  float m = -INFINITY, l = 0;
  const int64_t row0 = (b * a.Hk + kvh) * a.cap;
  for (int64_t s = c0 + warp; s <= last; s += WARPS) {
    const __nv_bfloat16* kr = a.k + (row0 + s) * a.D + lane * E;
    float dot = 0;
    for (int j = 0; j < E; ++j) dot += q[j] * bf(kr[j]);
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float sc = dot * a.scale, m2 = fmaxf(m, sc), corr = expf(m - m2), p = expf(sc - m2);
    const __nv_bfloat16* vr = a.v + (row0 + s) * a.D + lane * E;
    l = l * corr + p;
    for (int j = 0; j < E; ++j) acc[j] = acc[j] * corr + p * bf(vr[j]);
    m = m2;
  }
  __shared__ float wm[WARPS], wl[WARPS], wacc[WARPS][256];
  if (lane == 0) wm[warp] = m, wl[warp] = l;
  for (int j = 0; j < E; ++j) wacc[warp][lane * E + j] = acc[j];
  __syncthreads();
  float bm = -INFINITY;
  for (int w = 0; w < WARPS; ++w) bm = fmaxf(bm, wm[w]);
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    float sl = 0, sa = 0;
    for (int w = 0; w < WARPS; ++w) {
      if (wl[w] == 0) continue;
      const float c = expf(wm[w] - bm);
      sl += wl[w] * c;
      sa += wacc[w][d] * c;
    }
    emit(a, bh, d, bm, sl, sa);
  }
}

template <int E>
__global__ void __launch_bounds__(THREADS) attn_v2(Args a) {
  const int64_t bh = blockIdx.x, b = bh / a.H, h = bh % a.H, kvh = h / (a.H / a.Hk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t pos = *a.pos, c0 = int64_t(blockIdx.y) * CHUNK;
  const int n = int(max(int64_t(0), min(pos, min(c0 + CHUNK, int64_t(a.cap)) - 1) - c0 + 1));  // slots here
  const int64_t row0 = (b * a.Hk + kvh) * a.cap + c0;
  __shared__ float sc[CHUNK];
  __shared__ float red[WARPS];
  float q[E];
  for (int j = 0; j < E; ++j) q[j] = bf(a.q[bh * a.D + lane * E + j]);
  // QK: warp w scores slots w·4 .. w·4+3, then (w + WARPS)·4 ...: four rows in flight per warp.
  for (int s0 = warp * 4; s0 < n; s0 += WARPS * 4) {
    float dot[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      dot[u] = 0;
      if (s0 + u < n) {
        const __nv_bfloat16* kr = a.k + (row0 + s0 + u) * a.D + lane * E;
#pragma unroll
        for (int j = 0; j < E; ++j) dot[u] += q[j] * bf(kr[j]);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
      for (int u = 0; u < 4; ++u) dot[u] += __shfl_xor_sync(0xffffffffu, dot[u], o);
    const float mine = lane == 0 ? dot[0] : lane == 1 ? dot[1] : lane == 2 ? dot[2] : dot[3];  // no local memory
    if (lane < 4 && s0 + lane < n) sc[s0 + lane] = mine * a.scale;
  }
  __syncthreads();
  // Softmax over the chunk: block max, then p = exp(s − max) in place and the block sum.
  float m = -INFINITY;
  for (int s = threadIdx.x; s < n; s += blockDim.x) m = fmaxf(m, sc[s]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
  __syncthreads();
  float l = 0;
  for (int s = threadIdx.x; s < n; s += blockDim.x) l += (sc[s] = expf(sc[s] - m));
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  if (lane == 0) red[warp] = l;
  __syncthreads();
  l = red[0] + red[1] + red[2] + red[3];
  // PV: thread t owns elements t, t + THREADS (D ≤ 256), four slots per step.
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    float acc = 0;
    int s = 0;
    for (; s + 4 <= n; s += 4) {
      float v4[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) v4[u] = bf(a.v[(row0 + s + u) * a.D + d]);
#pragma unroll
      for (int u = 0; u < 4; ++u) acc += sc[s + u] * v4[u];
    }
    for (; s < n; ++s) acc += sc[s] * bf(a.v[(row0 + s) * a.D + d]);
    emit(a, bh, d, m, n > 0 ? l : 0, acc);
  }
}

__global__ void combine(Args a, int chunks) {
  const int64_t bh = blockIdx.x;
  const float* part = a.partial + bh * chunks * (a.D + 2);
  float gm = -INFINITY;
  for (int c = 0; c < chunks; ++c)
    if (part[c * (a.D + 2) + a.D + 1] > 0) gm = fmaxf(gm, part[c * (a.D + 2) + a.D]);
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    float sl = 0, sa = 0;
    for (int c = 0; c < chunks; ++c) {
      const float* pc = part + c * (a.D + 2);
      if (pc[a.D + 1] == 0) continue;
      const float f = expf(pc[a.D] - gm);
      sl += pc[a.D + 1] * f;
      sa += pc[d] * f;
    }
    a.y[bh * a.D + d] = __float2bfloat16(sa / sl);
  }
}

void launch(int version, const Args& a, cudaStream_t s = 0) {
  const int chunks = (a.cap + CHUNK - 1) / CHUNK;
  const dim3 grid(unsigned(a.B * a.H), unsigned(chunks));
  auto go = [&](auto k1, auto k2, auto k4, auto k8) {
    switch (a.D / 32) {
      case 1: k1<<<grid, THREADS, 0, s>>>(a); break;
      case 2: k2<<<grid, THREADS, 0, s>>>(a); break;
      case 4: k4<<<grid, THREADS, 0, s>>>(a); break;
      default: k8<<<grid, THREADS, 0, s>>>(a); break;
    }
  };
  if (version == 1) go(attn_v1<1>, attn_v1<2>, attn_v1<4>, attn_v1<8>);
  else go(attn_v2<1>, attn_v2<2>, attn_v2<4>, attn_v2<8>);
  if (chunks > 1) combine<<<unsigned(a.B * a.H), 128, 0, s>>>(a, chunks);
}

// float64 reference: softmax(scale · q·k) · v over slots 0..pos.
std::vector<double> reference(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                              int B, int H, int Hk, int D, int cap, int pos, double scale) {
  std::vector<double> y(size_t(B) * H * D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const size_t r0 = (size_t(b) * Hk + h / (H / Hk)) * cap;
      std::vector<double> p(size_t(pos) + 1);
      double m = -INFINITY, l = 0;
      for (int s = 0; s <= pos; ++s) {
        double d = 0;
        for (int j = 0; j < D; ++j) d += double(q[(size_t(b) * H + h) * D + j]) * k[(r0 + s) * D + j];
        p[size_t(s)] = d * scale, m = std::max(m, p[size_t(s)]);
      }
      for (auto& x : p) l += (x = std::exp(x - m));
      for (int j = 0; j < D; ++j) {
        double acc = 0;
        for (int s = 0; s <= pos; ++s) acc += p[size_t(s)] * v[(r0 + s) * D + j];
        y[(size_t(b) * H + h) * D + j] = acc / l;
      }
    }
  return y;
}

void run_case(int B, int H, int Hk, int D, int len, int cap) {
  const int pos = len - 1, chunks = (cap + CHUNK - 1) / CHUNK;
  std::mt19937 gen(uint32_t(B * 7 + H * 13 + D + len));
  std::normal_distribution<float> nd;
  auto rnd = [&](size_t n) {
    std::vector<float> x(n);
    for (auto& e : x) e = bench::bf16_to_f32(bench::f32_to_bf16(nd(gen)));
    return x;
  };
  const size_t nq = size_t(B) * H * D, nc = size_t(B) * Hk * cap * D;
  auto q = rnd(nq), k = rnd(nc), v = rnd(nc);
  const double scale = 1 / std::sqrt(double(D));
  const auto want = reference(q, k, v, B, H, Hk, D, cap, pos, scale);
  // Caches rotated past L2 (50 MB): enough copies that each launch reads one not read just before.
  const size_t cache_bytes = nc * 2;
  const int rot = int(std::max<size_t>(2, std::min<size_t>(16, 200000000 / std::max<size_t>(cache_bytes, 1) + 1)));
  std::vector<uint16_t> hq(nq), hk(nc), hv(nc);
  for (size_t i = 0; i < nq; ++i) hq[i] = bench::f32_to_bf16(q[i]);
  for (size_t i = 0; i < nc; ++i) {
    const bool filled = (i / D) % cap <= size_t(pos);
    hk[i] = filled ? bench::f32_to_bf16(k[i]) : 0x7fc0;  // NaN past pos: a kernel that reads them fails
    hv[i] = filled ? bench::f32_to_bf16(v[i]) : 0x7fc0;
  }
  __nv_bfloat16 *dq, *dk, *dv, *dy;
  int64_t* dpos;
  float* dpart;
  BENCH_CUDA(cudaMalloc(&dq, nq * 2));
  BENCH_CUDA(cudaMalloc(&dk, nc * 2 * rot));
  BENCH_CUDA(cudaMalloc(&dv, nc * 2 * rot));
  BENCH_CUDA(cudaMalloc(&dy, nq * 2));
  BENCH_CUDA(cudaMalloc(&dpos, 8));
  BENCH_CUDA(cudaMalloc(&dpart, size_t(B) * H * chunks * (D + 2) * 4 + 4));
  BENCH_CUDA(cudaMemcpy(dq, hq.data(), nq * 2, cudaMemcpyHostToDevice));
  for (int r = 0; r < rot; ++r) {
    BENCH_CUDA(cudaMemcpy(dk + nc * r, hk.data(), nc * 2, cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaMemcpy(dv + nc * r, hv.data(), nc * 2, cudaMemcpyHostToDevice));
  }
  const int64_t hpos = pos;
  BENCH_CUDA(cudaMemcpy(dpos, &hpos, 8, cudaMemcpyHostToDevice));
  Args a{B, H, Hk, D, cap, dq, dk, dv, dpos, float(scale), dpart, dy};
  const double kv_bytes = 2.0 * B * Hk * double(len) * D * 2;
  std::printf("B=%d H=%d Hk=%d D=%d len=%d cap=%d (%d chunks), filled KV %.1f MB\n", B, H, Hk, D, len, cap, chunks,
              kv_bytes / 1e6);
  // v3: the library kernel; its workspace for the smallest chunk (the most chunks).
  patchllm::DecodeAttnArgs la;
  la.dtype = patchllm::LAYER_BF16;
  la.B = B, la.H = H, la.Hk = Hk, la.D = D, la.capacity = cap, la.span = cap;
  la.q = dq, la.pos = dpos, la.scale = float(scale), la.y = dy;
  la.chunk = 64;
  la.heads_per_cta = 1;
  float* dws = nullptr;
  BENCH_CUDA(cudaMalloc(&dws, size_t(patchllm::decode_attention_workspace(la)) * 4 + 4));
  la.workspace = dws;
  // ver 1, 2: the dev kernels; 3: the library kernel, first as its launcher chooses (heads per CTA and chunk), then
  // with every valid pair of heads per CTA (up to the group rounded up to a power of two) and chunk of 64..1024 slots.
  struct Variant {
    int ver, heads, chunk;
  };
  std::vector<Variant> variants = {{1, 0, 0}, {2, 0, 0}, {3, 0, 0}};
  for (int g = 1; g <= 8 && g < 2 * (H / Hk); g *= 2)
    for (int c = 64; c <= 1024 && c < 2 * cap; c *= 2) {
      patchllm::DecodeAttnArgs t = la;
      t.heads_per_cta = g, t.chunk = c;
      if (patchllm::decode_attention_supported(t)) variants.push_back({3, g, c});
    }
  for (const Variant& var : variants) {
    const int ver = var.ver;
    la.heads_per_cta = var.heads, la.chunk = var.chunk;
    auto run = [&](int r) {
      if (ver < 3) {
        Args ar = a;
        ar.k = dk + nc * r, ar.v = dv + nc * r;
        launch(ver, ar);
      } else {
        patchllm::DecodeAttnArgs lr = la;
        lr.k_cache = dk + nc * r, lr.v_cache = dv + nc * r;
        const int e = patchllm::launch_decode_attention(lr);
        if (e != 0) std::printf("launch_decode_attention: %s\n", patchllm::layer_kernel_error_string(e)), std::exit(1);
      }
    };
    BENCH_CUDA(cudaMemset(dy, 0xff, nq * 2));  // poisoned (NaN) before the checked run
    run(0);
    BENCH_CUDA(cudaDeviceSynchronize());
    std::vector<uint16_t> hy(nq);
    BENCH_CUDA(cudaMemcpy(hy.data(), dy, nq * 2, cudaMemcpyDeviceToHost));
    double err = 0, ref = 0;
    for (size_t i = 0; i < nq; ++i) {
      err = std::max(err, std::fabs(double(bench::bf16_to_f32(hy[i])) - want[i]));
      ref = std::max(ref, std::fabs(want[i]));
    }
    const bool ok = err / ref <= 1e-2;  // NaN fails too
    const double us = bench::time_launches(run, rot);
    char name[32];
    if (ver < 3)
      std::snprintf(name, sizeof name, "v%d", ver);
    else
      std::snprintf(name, sizeof name, "v3%s g%d c%d", var.heads ? "" : " auto",
                    int(patchllm::decode_attention_heads(la)), int(patchllm::decode_attention_chunk(la)));
    std::printf("  %-17s %s rel err %.2e  %8.2f us  %7.1f GB/s  %5.1f%% of 3.35 TB/s\n", name, ok ? "ok  " : "FAIL",
                err / ref, us, kv_bytes / us / 1e3, 100 * kv_bytes / us / 1e3 / 3350);
  }
  cudaFree(dws);
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dy), cudaFree(dpos), cudaFree(dpart);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    if ((argc - 1) % 6 != 0) {
      std::fprintf(stderr, "usage: decode_attn [B H Hk D len cap]...\n");
      return 2;
    }
    for (int i = 1; i + 5 < argc; i += 6) {
      const int B = std::atoi(argv[i]), H = std::atoi(argv[i + 1]), Hk = std::atoi(argv[i + 2]),
                D = std::atoi(argv[i + 3]), len = std::atoi(argv[i + 4]), cap = std::atoi(argv[i + 5]);
      if (B < 1 || H < 1 || Hk < 1 || H % Hk || (D != 32 && D != 64 && D != 128 && D != 256) || len < 1 || cap < len) {
        std::fprintf(stderr, "decode_attn: bad case %d %d %d %d %d %d\n", B, H, Hk, D, len, cap);
        return 2;
      }
      run_case(B, H, Hk, D, len, cap);
    }
    return 0;
  }
  // LLaMA-2-7B (32 heads, no GQA) and LLaMA-3-8B (32 / 8), D = 128; batch 1 and 16; short, 2K and 8K contexts.
  for (int B : {1, 16})
    for (int Hk : {32, 8})
      for (int len : {80, 2048, 8192}) run_case(B, 32, Hk, 128, len, len + 64);
  run_case(1, 14, 2, 64, 2048, 2112);  // Qwen2.5-0.5B: 7 query heads per kv head, D = 64
  run_case(4, 4, 1, 256, 1000, 1024);  // Gemma 3 1B: D = 256
  return 0;
}
