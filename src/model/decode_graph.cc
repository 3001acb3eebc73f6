// Static decode step (eager on the CPU) and its CUDA graph (CUDA LibTorch only). See decode_graph.h.
// tokens [B, 1] int64, position int64 [1], cache K/V [B, Hkv, capacity, D] -> logits [B, vocab] fp32.
#include "model/decode_graph.h"

#include <limits>

#include "core/error.h"
#include "core/log.h"

// LibTorch 1.13 CPU has no CUDA headers: the graph code exists only with a CUDA LibTorch (CMake defines the macro).
#ifdef PATCHLLM_TORCH_HAS_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace patchllm {

#ifdef PATCHLLM_TORCH_HAS_CUDA
struct DecodeGraph::Graph {
  at::cuda::CUDAGraph graph;
};
#else
struct DecodeGraph::Graph {};
#endif

DecodeGraph::DecodeGraph(Model& model, int64_t batch, int64_t capacity, bool cuda_graph)
    : _model(model), _batch(batch), _want_graph(cuda_graph && model.device.is_cuda()) {
  PATCHLLM_CHECK(batch >= 1 && capacity >= 1, InvalidArgument, "decode graph needs batch >= 1 and capacity >= 1, got ",
                 batch, " and ", capacity);
  _cache = model.make_cache(batch, capacity);
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(model.device);
  _tokens = torch::zeros({batch, 1}, lopt);
  _pos = torch::zeros({1}, lopt);
  _kpos = torch::arange(capacity, lopt);
}

DecodeGraph::~DecodeGraph() = default;

bool DecodeGraph::graph_captured() const { return _graph != nullptr; }

torch::Tensor DecodeGraph::prefill(const torch::Tensor& tokens) {
  torch::NoGradGuard ng;
  return _model.forward(tokens, &_cache);
}

// Mirrors Model::make_context for one query at position _pos (no padding) and Model::forward, without host reads.
torch::Tensor DecodeGraph::run() {
  const ModelConfig& c = _model.config;
  LayerContext ctx;
  ctx.cache_pos = _pos;
  auto pos = _pos.to(torch::kFloat32).view({1, 1});  // [1, T = 1]
  auto rope = [&](const torch::Tensor& inv, torch::Tensor& cos, torch::Tensor& sin) {
    auto freqs = pos.unsqueeze(-1) * inv.view({1, 1, -1});
    auto emb = torch::cat({freqs, freqs}, -1);
    cos = emb.cos().to(_model.dtype);
    sin = emb.sin().to(_model.dtype);
  };
  // [1, 1, 1, capacity] additive: 0 where key slot <= pos (and pos - slot < window), -inf elsewhere.
  auto mask = [&](int64_t window) {
    auto ok = _kpos <= _pos;
    if (window > 0) ok = ok.logical_and((_pos - _kpos) < window);
    auto fopt = torch::TensorOptions().dtype(_model.dtype).device(_model.device);  // as Model::make_context
    return torch::zeros({_kpos.size(0)}, fopt)
        .masked_fill(ok.logical_not(), -std::numeric_limits<float>::infinity())
        .view({1, 1, 1, -1});
  };
  const bool per_layer = !c.sliding_layers.empty();  // Gemma 3: global layers have no window
  rope(_model.inv_freq, ctx.cos, ctx.sin);
  ctx.attn_bias = mask(per_layer ? 0 : c.sliding_window);
  ctx.causal_only = false;
  if (per_layer) {
    rope(_model.inv_freq_local, ctx.cos_local, ctx.sin_local);
    ctx.attn_bias_local = mask(c.sliding_window);
    ctx.causal_only_local = false;
  }
  auto h = _model.embed_lookup(_tokens);
  torch::Tensor delta;  // each layer's last residual add fuses into the next one's input norm
  for (int64_t i = 0; i < c.num_layers; ++i) std::tie(h, delta) = _model.layer_forward_split(i, h, delta, ctx, &_cache);
  return _model.head(delta.defined() ? h + delta : h).select(1, 0);
}

torch::Tensor DecodeGraph::step(const torch::Tensor& tokens) {
  PATCHLLM_CHECK(tokens.numel() == _batch, InvalidArgument, "decode step needs ", _batch, " token ids, got ",
                 tokens.sizes());
  PATCHLLM_CHECK(_cache.length < _cache.capacity, InvalidArgument, "KV cache full: ", _cache.length, " + 1 > capacity ",
                 _cache.capacity);
  torch::NoGradGuard ng;
  _tokens.copy_(tokens.reshape({_batch, 1}));
  _pos.fill_(_cache.length);
  torch::Tensor out;
#ifdef PATCHLLM_TORCH_HAS_CUDA
  if (_graph) {
    _graph->graph.replay();
    out = _logits;
  } else if (_want_graph && !_tried) {
    out = warm_up_and_capture();
  } else {
    out = run();
  }
#else
  if (_want_graph && !_tried) {
    _tried = true;
    _fallback = "this LibTorch has no CUDA graphs";
    log_warn("decode graph: ", _fallback, "; decoding eagerly");
  }
  out = run();
#endif
  _cache.length += 1;
  return out;
}

#ifdef PATCHLLM_TORCH_HAS_CUDA
torch::Tensor DecodeGraph::warm_up_and_capture() {
  _tried = true;
  torch::cuda::synchronize();  // the prefill and the buffer copies are done before the side stream starts
  auto g = std::make_unique<Graph>();
  torch::Tensor out;
  bool captured = false;
  {
    c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool(false, _model.device.index()));
    // Warm-up: this token's real step, on the capture stream, so lazily made workspaces (hybrid kernels, cuBLAS)
    // exist before capture. Capture then records the same step without running it: the cache is written once.
    out = run();
    torch::cuda::synchronize();
    bool begun = false;
    try {
      g->graph.capture_begin();
      begun = true;
      _logits = run();
      g->graph.capture_end();
      captured = true;
    } catch (const std::exception& e) {
      if (begun) {
        try {
          g->graph.capture_end();  // ends the (invalidated) capture on the stream
        } catch (const std::exception&) {
        }
      }
      (void)cudaGetLastError();
      std::string m = e.what();
      _fallback = m.substr(0, m.find('\n'));
      _logits = torch::Tensor();
    }
  }
  torch::cuda::synchronize();
  if (captured) {
    _graph = std::move(g);
  } else {
    log_warn("decode graph: CUDA graph capture failed (", _fallback, "); decoding eagerly");
  }
  return out.clone();  // on the current stream, independent of the side stream's memory
}
#else
torch::Tensor DecodeGraph::warm_up_and_capture() { return run(); }
#endif

}  // namespace patchllm
