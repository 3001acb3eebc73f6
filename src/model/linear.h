// The one module boundary for every decoder linear: y = x Wᵀ + b.
// x: [..., in], weight: [out, in] in the model's compute dtype, bias: [out] or undefined.
// Later stages (masked, soft-masked during learning, packed hybrid) subclass Linear and replace the slot in the model.
#pragma once
#include <torch/torch.h>

#include <memory>

namespace patchllm {

class Linear {
 public:
  Linear(torch::Tensor weight, torch::Tensor bias = {}) : weight(std::move(weight)), bias(std::move(bias)) {}
  virtual ~Linear() = default;
  virtual torch::Tensor forward(const torch::Tensor& x) { return torch::linear(x, weight, bias); }
  virtual int64_t out_features() const { return weight.size(0); }
  virtual int64_t in_features() const { return weight.size(1); }

  torch::Tensor weight;  // frozen dense weight as loaded
  torch::Tensor bias;
};
using LinearPtr = std::shared_ptr<Linear>;

}  // namespace patchllm
