// Reference hybrid linear: unpack to the dense masked weight, GEMM in fp32, cast back. The oracle for the kernels.
// x: [..., K] bf16/fp16, W: [N, K] packed hybrid -> y: [..., N] in x's dtype.
#include "core/error.h"
#include "ops/hybrid_linear.h"

namespace patchllm {

torch::Tensor hybrid_linear_ref(const torch::Tensor& x, const HybridWeight& hw) {
  PATCHLLM_CHECK(x.defined() && x.dim() >= 1, InvalidArgument, "hybrid_linear_ref: x must have at least 1 dimension");
  PATCHLLM_CHECK(x.size(-1) == hw.in_features(), InvalidArgument, "hybrid_linear_ref: x has K=", x.size(-1),
                 " but the weight has K=", hw.in_features());
  torch::Tensor w = hybrid_unpack(hw).to(x.device(), torch::kFloat32);
  torch::Tensor y = torch::matmul(x.to(torch::kFloat32), w.t());
  return y.to(x.scalar_type());
}

}  // namespace patchllm
