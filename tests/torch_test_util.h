// LibTorch test helpers shared by several test files.
#pragma once
#include <torch/torch.h>

#include <algorithm>

namespace patchllm::test {

// A random exact 2:4 mask [rows, cols] (cols % 4 == 0) as 0/1 floats: 2 of every 4 consecutive inputs kept.
inline torch::Tensor random_24(int64_t rows, int64_t cols, uint64_t seed) {
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(seed);
  auto s = torch::rand({rows, cols / 4, 4}, gen);
  auto idx = std::get<1>(s.topk(2, -1));
  return torch::zeros({rows, cols / 4, 4}).scatter_(-1, idx, 1.0).view({rows, cols});
}

// max |got − want| / max |want|, in float64 on the CPU.
inline double rel_err(const torch::Tensor& got, const torch::Tensor& want) {
  auto x = got.detach().cpu().to(torch::kFloat64), y = want.detach().cpu().to(torch::kFloat64);
  return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-300);
}

}  // namespace patchllm::test
