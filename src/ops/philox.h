// Counter-based noise for mask learning, the same bits on the host and in CUDA kernels: Philox4x32-10 (Salmon et
// al., SC'11; checked against the Random123 known-answer vectors in tests). Why counter-based: a fused kernel draws
// the Gumbel noise of a 2:4 group where it needs it, and the checkpointed recompute and the backward kernel draw the
// same values again from (seed, index) instead of storing them.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define PATCHLLM_HD __host__ __device__ __forceinline__
#else
#define PATCHLLM_HD inline
#endif

namespace patchllm {

struct Philox4 {
  uint32_t v[4];
};

PATCHLLM_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r) k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    const uint64_t p0 = uint64_t(0xD2511F53u) * c.v[0], p1 = uint64_t(0xCD9E8D57u) * c.v[2];
    c = Philox4{{uint32_t(p1 >> 32) ^ c.v[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c.v[3] ^ k1, uint32_t(p0)}};
  }
  return c;
}

// The 4 words of block b of stream `seed`: counter (b, stream), key = the seed's two halves.
PATCHLLM_HD Philox4 philox_block(uint64_t seed, uint64_t b, uint32_t stream = 0) {
  return philox4x32_10(Philox4{{uint32_t(b), uint32_t(b >> 32), stream, 0u}}, uint32_t(seed), uint32_t(seed >> 32));
}

// A word as a uniform in [2⁻²⁴, 1 − 2⁻²⁴] (k·2⁻²³ + 2⁻²⁴, all exact in fp32): never 0 or 1, so −log(−log u) is finite.
PATCHLLM_HD float philox_unit(uint32_t w) { return float(w >> 9) * 1.1920928955078125e-7f + 5.9604644775390625e-8f; }

// Element e of the uniform sequence of `seed`: word e % 4 of block e / 4.
PATCHLLM_HD float philox_uniform(uint64_t seed, uint64_t e) { return philox_unit(philox_block(seed, e >> 2).v[e & 3]); }

}  // namespace patchllm
