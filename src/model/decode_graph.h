// Static-shape decode step, replayed as a CUDA graph on CUDA. Eager decode (Model::forward with a KVCache) is
// launch-bound on the GPU: every token builds a fresh context, narrows the cache to a growing length and checks token
// ids on the host. Here the step has fixed shapes: tokens [B, 1] and the position (int64 [1]) sit in device buffers,
// RoPE cos/sin and the additive mask come from the position on the device, K/V are written at the position
// (index_copy_) and attention runs over a fixed span of cache slots with the slots after the position masked (Gemma 3
// sliding layers and Mistral also mask slots a window or more behind). The span is the smallest min_span·2^k (at most
// the capacity) past the position, each span its own graph, so the early steps of a long generation do not read the
// whole cache. Rows may be left-padded (batched generation): per-row RoPE positions and padding masks, computed on
// the device from the position. Where the decode-attention kernel applies (ops/layer_ops.h decode_attention_fusable:
// CUDA, bf16/fp16, head_dim 64/128/256) it reads only each row's visible slots instead of the masked span. Logits
// [B, vocab] fp32.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace patchllm {

struct DecodeGraphOptions {
  // On a CUDA model, capture each span's step as a CUDA graph and replay it (else the same steps run eagerly).
  bool cuda_graph = true;
  // Per row, the padding slots before its prompt (prompts left-padded to one length): those slots are masked and the
  // row's RoPE positions count its real tokens only, as Model::forward with an attention mask does. Empty: no padding.
  std::vector<int64_t> left_pad;
  // Attention spans are min_span·2^k slots, capped at the capacity; 0: always the whole capacity (one graph).
  int64_t min_span = 256;
};

// Use: prefill() the prompt (eager Model::forward into cache()), then step() once per token; every row is at the same
// cache slot (padding fills the shorter rows' first slots). With cuda_graph on a CUDA model, the first step of each
// span runs eagerly on a side stream (warm-up: kernel workspaces are allocated outside capture) and is then captured;
// later steps copy the token and position into the static buffers and replay. On the CPU, with a LibTorch without
// CUDA, or when capture fails (one warning), the same steps run eagerly. The graphs hold pointers to the cache, the
// buffers and the hybrid kernels' workspaces: while a DecodeGraph is in use run no other forward of the model (a
// longer prefill may grow a workspace a graph points at); make a new DecodeGraph per generation.
class DecodeGraph {
 public:
  DecodeGraph(Model& model, int64_t batch, int64_t capacity, const DecodeGraphOptions& opt = {});
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // Eager forward of tokens [B, T] into the cache at cache().length; the last position's logits [B, vocab] fp32.
  torch::Tensor prefill(const torch::Tensor& tokens);
  // Continuous batching: a new prompt tokens [1, n] (n <= cache().length) for row `row`, written into that row's slots
  // [length - n, length), which become its prompt; the slots before are its padding from now on (the graphs read the
  // padding from the device, so they stay valid). Needs left_pad (all zeros is fine). Runs as Model::prefill_row (a
  // causal prefill over the prompt's own slots, bucketed length). The last prompt token's logits [1, vocab] fp32.
  torch::Tensor prefill_row(int64_t row, const torch::Tensor& tokens);
  // tokens [B] or [B, 1] integer ids (any device) at position cache().length. Logits [B, vocab] fp32; once the
  // span's graph is captured this is its static output, overwritten by its next replay (clone it to keep it).
  torch::Tensor step(const torch::Tensor& tokens);

  KVCache& cache() { return _cache; }
  int64_t batch() const { return _batch; }
  // The slots the next step attends over.
  int64_t span() const;
  // Whether the last step replayed (or was captured into) a CUDA graph.
  bool graph_captured() const { return _last_captured; }
  int64_t graphs_captured() const;
  // Why a CUDA model steps eagerly ("" when captured, not yet tried, or not asked for).
  const std::string& fallback_reason() const { return _fallback; }

 private:
  struct Graph;
  torch::Tensor run(int64_t span);  // the static step on _tokens/_pos over slots [0, span)
  torch::Tensor warm_up_and_capture(int64_t span);

  Model& _model;
  int64_t _batch;
  DecodeGraphOptions _opt;
  KVCache _cache;
  torch::Tensor _tokens, _pos, _kpos;  // int64 [B, 1], [1], [capacity] (0..capacity-1), on the model's device
  torch::Tensor _pad;                  // int64 [B] on the device (left_pad), undefined without padding
  std::vector<int64_t> _pads;          // the same on the host
  bool _want_graph, _last_captured = false;
  std::string _fallback;
  std::map<int64_t, std::unique_ptr<Graph>> _graphs;  // the captured graphs, per span (a failed capture turns
                                                      // _want_graph off instead)
};

}  // namespace patchllm
