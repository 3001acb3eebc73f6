// Gradient checkpointing for LibTorch C++ (which has no torch.utils.checkpoint): run a block without storing its
// activations and recompute it in backward. Used per decoder layer during mask learning, so that a layer's
// full-size intermediates (Joint: the soft 2:4 mask and the masked weight) exist only while that layer is recomputed.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace patchllm {

// f(h, extras) -> outputs. Must be deterministic (noise from seeds, not from global RNG state). Gradients flow to h
// and to every extra that requires grad (pass everything the block reads that needs a gradient, e.g. the tile
// samples and mask logits; tensors that the block captures otherwise get no gradient). outputs[0] is the block's
// output; further outputs (e.g. per-matrix norms) may be scalars.
using CheckpointFn = std::function<std::vector<torch::Tensor>(const torch::Tensor& h,
                                                              const std::vector<torch::Tensor>& extras)>;
std::vector<torch::Tensor> checkpoint(const CheckpointFn& f, const torch::Tensor& h,
                                      const std::vector<torch::Tensor>& extras);

}  // namespace patchllm
