// Host helpers shared by bench/bench_ops.cu and dev/kernels/hybrid_gemm.cu: random hybrid problems (non-zero
// weights, random tile placement, random 2:4 masks), multi-threaded packing, 16-bit conversions, CUDA checks.
// No LibTorch: these programs build with plain nvcc on the GPU machine.
#pragma once
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "ops/hybrid_format.h"

#define BENCH_CUDA(call)                                                                             \
  do {                                                                                               \
    cudaError_t e_ = (call);                                                                         \
    if (e_ != cudaSuccess) {                                                                         \
      std::fprintf(stderr, "%s:%d: CUDA error %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                  \
    }                                                                                                \
  } while (0)

namespace bench {

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);  // round to nearest even (inputs are finite)
  return uint16_t(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_f16(float f) {  // finite, normal-range inputs only (|f| in [2^-14, 65504])
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000, mant = u & 0x7fffff;
  int exp = int((u >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return uint16_t(sign);
  uint32_t r = (uint32_t(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return uint16_t(sign | r);
}
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    float f = std::ldexp(float(mant), -24);
    return (h & 0x8000) ? -f : f;
  }
  if (exp == 31) u = sign | 0x7f800000 | (mant << 13);
  else u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// splitmix64: fast, seedable, identical on every machine.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// Uniform in [-1.5, -0.5) ∪ [0.5, 1.5): never zero, so a dropped value shows.
inline float nonzero_value(uint64_t h) {
  float u = float((h >> 40) & 0xffffff) / 16777216.0f;
  return (h & 1) ? (0.5f + u) : -(0.5f + u);
}

inline void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& f) {
  int nt = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (int i = 0; i < nt; ++i) {
    int64_t b = n * i / nt, e = n * (i + 1) / nt;
    if (b < e) th.emplace_back(f, b, e);
  }
  for (auto& t : th) t.join();
}

struct Problem {
  int64_t N = 0, K = 0;
  bool bf16 = true;
  std::vector<uint16_t> w;       // [N, K] dense random weight
  std::vector<uint8_t> keep;     // [N, K] 2:4 keep mask along K
  std::vector<uint8_t> tmap;     // [RB, CT] 1 = 2:4 tile
  patchllm::HybridLayout layout;
  std::vector<uint8_t> blob;     // packed
  double frac = 0;               // achieved 2:4 tile fraction
};

inline uint16_t to16(float f, bool bf16) { return bf16 ? f32_to_bf16(f) : f32_to_f16(f); }
inline float from16(uint16_t h, bool bf16) { return bf16 ? bf16_to_f32(h) : f16_to_f32(h); }

// Random problem: round(f·T) 2:4 tiles at random places, random 2:4 pairs, non-zero weights.
inline Problem make_problem(int64_t N, int64_t K, double f, uint64_t seed, bool bf16 = true, bool pack = true) {
  Problem P;
  P.N = N;
  P.K = K;
  P.bf16 = bf16;
  P.w.resize(size_t(N * K));
  P.keep.resize(size_t(N * K));
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < K; ++k) P.w[r * K + k] = to16(nonzero_value(mix(seed * 1315423911ull + r * K + k)), bf16);
      for (int64_t c = 0; c < K; c += 4) {
        static const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
        const int* pr = pairs[mix(seed ^ (0xabcdefull + r * K + c)) % 6];
        for (int e = 0; e < 4 && c + e < K; ++e) P.keep[r * K + c + e] = (e == pr[0] || e == pr[1]);
      }
    }
  });
  const int64_t RB = patchllm::hybrid_ceil_div(N, 128), CT = patchllm::hybrid_ceil_div(K, 128), T = RB * CT;
  std::vector<int64_t> order(T);
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = T - 1; i > 0; --i) std::swap(order[i], order[mix(seed * 7 + i) % uint64_t(i + 1)]);
  const int64_t ns = std::llround(f * double(T));
  P.tmap.assign(T, 0);
  for (int64_t i = 0; i < ns; ++i) P.tmap[order[i]] = 1;
  P.frac = double(ns) / double(T);
  P.layout = patchllm::hybrid_layout_make(N, K, 128, 128, P.tmap.data());
  if (pack) {
    P.blob.resize(size_t(P.layout.offsets.back()));
    parallel_for(RB, [&](int64_t b0, int64_t b1) {
      for (int64_t rb = b0; rb < b1; ++rb)
        for (int64_t ct = 0; ct < CT; ++ct) {
          const int64_t t = rb * CT + ct;
          std::string err = patchllm::hybrid_pack_tile(P.w.data(), P.keep.data(), N, K, rb * 128, ct * 128, 128,
                                                       128, P.layout.kinds[t], P.blob.data() + P.layout.offsets[t]);
          if (!err.empty()) {
            std::fprintf(stderr, "pack: %s\n", err.c_str());
            std::exit(1);
          }
        }
    });
  }
  return P;
}

// A copy of h in device memory (null where cudaMalloc fails).
template <typename T>
T* to_device(const std::vector<T>& h) {
  void* d = nullptr;
  if (cudaMalloc(&d, h.size() * sizeof(T)) != cudaSuccess) return nullptr;
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T*>(d);
}

// The prefill kernel v8's inputs on the device, for the dev harnesses: x (M × K bf16, a fixed pattern in [-1, 1],
// kept on the host too for references), the weight's prefill image, its kinds and offsets, and v8's order table.
struct PrefillDevice {
  std::vector<uint16_t> x_host;
  uint16_t* x = nullptr;
  uint8_t *image = nullptr, *kinds = nullptr;
  int64_t* offsets = nullptr;
  uint32_t* order = nullptr;
  void release() {
    for (void* p : {(void*)x, (void*)image, (void*)kinds, (void*)offsets, (void*)order}) cudaFree(p);
    x = nullptr, image = kinds = nullptr, offsets = nullptr, order = nullptr;
  }
};
inline PrefillDevice prefill_device(const Problem& P, int64_t M) {
  PrefillDevice d;
  d.x_host.resize(size_t(M * P.K));
  for (size_t i = 0; i < d.x_host.size(); ++i)
    d.x_host[i] = f32_to_bf16(float((i * 2654435761u) % 2001) / 1000.f - 1.f);
  std::vector<uint8_t> image(P.blob.size());
  patchllm::hybrid_prefill_image_raw(P.blob.data(), P.layout, image.data());
  std::vector<uint32_t> ord(size_t(patchllm::hybrid_prefill_order_words(P.layout)));
  patchllm::hybrid_prefill_order_raw(P.layout, ord.data());
  d.x = to_device(d.x_host), d.image = to_device(image), d.kinds = to_device(P.layout.kinds);
  d.offsets = to_device(P.layout.offsets), d.order = to_device(ord);
  return d;
}

// Dense weight the packed one stands for (masked inside 2:4 tiles).
inline std::vector<uint16_t> masked_dense(const Problem& P) {
  std::vector<uint16_t> d(P.w.size());
  const int64_t CT = P.layout.col_tiles;
  parallel_for(P.N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t k = 0; k < P.K; ++k) {
        bool sp = P.tmap[(r / 128) * CT + k / 128];
        d[r * P.K + k] = (sp && !P.keep[r * P.K + k]) ? 0 : P.w[r * P.K + k];
      }
  });
  return d;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

// With PATCHLLM_PROFILE_MARKS set, time_launches(..., mark) ends with one more launch inside an NVTX range named
// `mark`, so Nsight Compute can profile exactly that launch (`ncu --nvtx --nvtx-include "mark/"`) and not the warm-up,
// the timed batches or cuSPARSELt's algorithm search.
inline void profile_mark(const char* mark, const std::function<void(int)>& launch) {
  static const bool on = std::getenv("PATCHLLM_PROFILE_MARKS") != nullptr;
  if (!on || !mark) return;
  BENCH_CUDA(cudaDeviceSynchronize());
  nvtxRangePushA(mark);
  launch(0);
  BENCH_CUDA(cudaDeviceSynchronize());
  nvtxRangePop();
}

// Median µs per launch: `rot` warm-up launches, then `batches` batches of max(rot, 10) back-to-back launches (CUDA
// events on the legacy stream); launch(i) gets i < rot, so callers can rotate weight copies past L2.
inline double time_launches(const std::function<void(int)>& launch, int rot, int batches = 15,
                            const char* mark = nullptr) {
  const int per = std::max(rot, 10);
  for (int i = 0; i < rot; ++i) launch(i);  // warm-up (module load, handles, algorithm caches)
  BENCH_CUDA(cudaDeviceSynchronize());
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  std::vector<double> t;
  for (int b = 0; b < batches; ++b) {
    BENCH_CUDA(cudaEventRecord(e0));
    for (int i = 0; i < per; ++i) launch(i % rot);
    BENCH_CUDA(cudaEventRecord(e1));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(1e3 * ms / per);
  }
  BENCH_CUDA(cudaGetLastError());
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  profile_mark(mark, launch);
  return median(t);
}

}  // namespace bench
