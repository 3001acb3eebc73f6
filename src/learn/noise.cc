#include "learn/noise.h"

#include <mutex>

namespace patchllm {

static uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t noise_seed(uint64_t seed, uint64_t step, uint64_t micro, uint64_t matrix, uint64_t stream) {
  uint64_t h = splitmix64(seed);
  for (uint64_t v : {step, micro, matrix, stream}) h = splitmix64(h ^ v);
  return h >> 1;  // keep it positive for APIs that take int64 seeds
}

torch::Tensor noise_uniform(at::IntArrayRef shape, uint64_t seed, torch::Device device, double lo, double hi) {
  auto out = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  // The device's default generator (CPU or CUDA, whichever the tensor lives on); seeding resets the Philox offset on
  // CUDA, so the draw depends on the seed alone.
  auto gen = at::globalContext().defaultGenerator(device);
  {
    std::lock_guard<std::mutex> lock(gen.mutex());  // released before uniform_, which takes it itself
    gen.set_current_seed(seed);
  }
  out.uniform_(lo, hi, gen);
  return out;
}

}  // namespace patchllm
