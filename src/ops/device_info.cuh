// The current GPU's SM count and compute capability, asked once per device and cached (one table for the whole
// library: the hybrid GEMM launcher and the decoder-layer kernels size their grids from it). CUDA runtime only.
#pragma once
#include <cuda_runtime.h>

namespace patchllm {

struct DeviceInfo {
  int sms = 0, major = 0;  // 0: no device (or the query failed)
};

inline DeviceInfo device_info() {
  static DeviceInfo cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return {};
  DeviceInfo& d = cache[dev];
  if (d.sms == 0) {
    cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev);
  }
  return d;
}

}  // namespace patchllm
