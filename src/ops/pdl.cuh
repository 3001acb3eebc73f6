// Programmatic dependent launch (PDL, sm_90+) in device code, shared by the hybrid decode kernel and the decoder-layer
// kernels. Both are no-ops in older device code and when the grid was launched without the PDL attribute.
#pragma once

namespace patchllm {

// The next grid in the stream may be scheduled once every CTA of this one has passed here (or exited).
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Returns once the previous grid has completed and its writes are visible. A PDL-launched kernel reads nothing a
// previous kernel may write, and writes nothing, before it; and every CTA passes it, so that this grid completes only
// after its predecessor (a chain of PDL launches then orders each kernel after all earlier ones).
__device__ __forceinline__ void pdl_grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace patchllm
