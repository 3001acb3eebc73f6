// The first hybrid_linear call of a process inside a CUDA-graph capture, as when a caller captures a decode step
// without an eager warm-up: the launcher's one-time device-code probe must still run (its own stream, relaxed capture
// mode) instead of failing and caching "no sm_90 code", which would turn off the wgmma prefill kernels, PDL and the
// cluster reduction for the rest of the process. Its own executable, so that nothing has probed before. GPU only.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ops/hybrid_linear.h"
#include "torch_test_util.h"

#if defined(PATCHLLM_HAVE_CUDA_KERNELS) && defined(PATCHLLM_TORCH_HAS_CUDA)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ops/hybrid_gemm.h"
#endif

using namespace patchllm;

TEST(HybridCapture, FirstCallInsideAGraphCaptureProbesTheDeviceCode) {
#if !(defined(PATCHLLM_HAVE_CUDA_KERNELS) && defined(PATCHLLM_TORCH_HAS_CUDA))
  GTEST_SKIP() << "no CUDA kernels or a CPU-only LibTorch: no CUDA graphs";
#else
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: kernels not run";
  torch::manual_seed(3);
  const int64_t N = 256, K = 384, M = 16;
  auto w = (torch::rand({N, K}) + 0.5) * (torch::rand({N, K}).lt(0.5).to(torch::kFloat32) * 2 - 1);  // |w| >= 0.5
  auto keep = test::random_24(N, K, 3).to(torch::kBool);
  auto tmap = torch::tensor({1, 0, 1, 0, 1, 1}, torch::kUInt8).view({2, 3});  // half the tiles 2:4
  auto hw = hybrid_pack(w.to(torch::kBFloat16), tmap, keep);
  auto hwc = hw.to(torch::Device(torch::kCUDA, 0));
  auto x = torch::randn({M, K}).to(torch::kBFloat16);
  auto want = hybrid_linear_ref(x, hw).to(torch::kFloat64);
  auto xc = x.to(torch::kCUDA);
  at::cuda::CUDAGraph graph;
  torch::Tensor y;
  {
    c10::cuda::CUDAStreamGuard sg(c10::cuda::getStreamFromPool());
    graph.capture_begin();
    y = hybrid_linear(xc, hwc);  // the process's first hybrid call
    graph.capture_end();
    graph.replay();
  }
  torch::cuda::synchronize();
  EXPECT_TRUE(hybrid_device_code() & HYBRID_CODE_RAN) << "the probe failed inside the capture";
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major >= 9) EXPECT_TRUE(hybrid_device_code() & HYBRID_CODE_SM90) << "sm_90 device without sm_90 code";
  auto got = y.cpu().to(torch::kFloat64);
  EXPECT_LT(((got - want).norm() / want.norm()).item<double>(), 1e-2);
#endif
}
