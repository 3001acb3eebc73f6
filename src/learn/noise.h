// Reproducible noise for mask learning: every sample is drawn from a generator seeded by (run seed, step,
// micro-batch, matrix), so a checkpointed recompute sees the same noise and a resumed run the same sequence, with no
// RNG state to save.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace patchllm {

// splitmix64 over the parts: a well-mixed 64-bit seed.
uint64_t noise_seed(uint64_t seed, uint64_t step, uint64_t micro, uint64_t matrix, uint64_t stream = 0);
// U(lo, hi) of the given shape on `device`, from `seed` (the device's default generator is re-seeded under its lock).
torch::Tensor noise_uniform(at::IntArrayRef shape, uint64_t seed, torch::Device device, double lo, double hi);

}  // namespace patchllm
