// Static-shape decode step, replayed as a CUDA graph on CUDA. Eager decode (Model::forward with a KVCache) is
// launch-bound on the GPU: every token builds a fresh context, narrows the cache to a growing length and checks token
// ids on the host. Here the step has fixed shapes: tokens [B, 1] and the position (int64 [1]) sit in device buffers,
// RoPE cos/sin and the additive mask come from the position on the device, K/V are written at the position
// (index_copy_) and attention runs over the whole cache capacity with the slots after the position masked (Gemma 3
// sliding layers and Mistral also mask slots a window or more behind). Logits [B, vocab] fp32.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "model/model.h"

namespace patchllm {

// Use: prefill() the prompt (eager Model::forward into cache()), then step() once per token; every row is at the same
// position (no left padding). With cuda_graph on a CUDA model the first step runs eagerly on a side stream (warm-up:
// kernel workspaces are allocated outside capture) and is then captured; later steps copy the token and position
// into the static buffers and replay. On the CPU, with a LibTorch without CUDA, or when capture fails (one warning),
// the same step runs eagerly. The graph holds pointers to the cache, the buffers and the hybrid kernels' workspaces:
// while a DecodeGraph is in use run no other forward of the model (a longer prefill may grow a workspace the graph
// points at); make a new DecodeGraph per generation.
class DecodeGraph {
 public:
  DecodeGraph(Model& model, int64_t batch, int64_t capacity, bool cuda_graph = true);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // Eager forward of tokens [B, T] into the cache at cache().length; logits [B, T, vocab] fp32.
  torch::Tensor prefill(const torch::Tensor& tokens);
  // tokens [B] or [B, 1] integer ids (any device) at position cache().length. Logits [B, vocab] fp32; once the graph
  // is captured this is its static output, overwritten by the next step (clone it to keep it).
  torch::Tensor step(const torch::Tensor& tokens);

  KVCache& cache() { return _cache; }
  int64_t batch() const { return _batch; }
  bool graph_captured() const;
  // Why a CUDA model steps eagerly ("" when captured, not yet tried, or not asked for).
  const std::string& fallback_reason() const { return _fallback; }

 private:
  struct Graph;
  torch::Tensor run();           // the static step on _tokens/_pos
  torch::Tensor warm_up_and_capture();

  Model& _model;
  int64_t _batch;
  KVCache _cache;
  torch::Tensor _tokens, _pos, _kpos;  // int64 [B, 1], [1], [capacity] (0..capacity-1), on the model's device
  torch::Tensor _logits;               // the captured step's output
  bool _want_graph, _tried = false;
  std::string _fallback;
  std::unique_ptr<Graph> _graph;
};

}  // namespace patchllm
