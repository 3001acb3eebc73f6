// Static decode step (eager on the CPU) and its CUDA graph (CUDA LibTorch only). See decode_graph.h.
// tokens [B, 1] int64, position int64 [1], cache K/V [B, Hkv, capacity, D] (attention over the first `span` slots)
// -> logits [B, vocab] fp32.
#include "model/decode_graph.h"

#include <algorithm>
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
  torch::Tensor logits;  // the captured step's output
};
#else
struct DecodeGraph::Graph {};
#endif

DecodeGraph::DecodeGraph(Model& model, int64_t batch, int64_t capacity, const DecodeGraphOptions& opt)
    : _model(model), _batch(batch), _opt(opt), _want_graph(opt.cuda_graph && model.device.is_cuda()) {
  PATCHLLM_CHECK(batch >= 1 && capacity >= 1, InvalidArgument, "decode graph needs batch >= 1 and capacity >= 1, got ",
                 batch, " and ", capacity);
  PATCHLLM_CHECK(opt.min_span >= 0, InvalidArgument, "decode graph: min_span must be >= 0, got ", opt.min_span);
  PATCHLLM_CHECK(opt.left_pad.empty() || static_cast<int64_t>(opt.left_pad.size()) == batch, InvalidArgument,
                 "decode graph: left_pad needs one entry per row (", batch, "), got ", opt.left_pad.size());
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(model.device);
  if (!opt.left_pad.empty()) {
    for (int64_t p : opt.left_pad)
      PATCHLLM_CHECK(p >= 0 && p < capacity, InvalidArgument, "decode graph: left padding ", p,
                     " outside [0, capacity ", capacity, ")");
    _pads = opt.left_pad;
    _pad = torch::tensor(_pads, torch::kLong).to(model.device);
  }
  _cache = model.make_cache(batch, capacity);
  _tokens = torch::zeros({batch, 1}, lopt);
  _pos = torch::zeros({1}, lopt);
  _kpos = torch::arange(capacity, lopt);
}

DecodeGraph::~DecodeGraph() = default;

int64_t DecodeGraph::graphs_captured() const { return static_cast<int64_t>(_graphs.size()); }

int64_t DecodeGraph::span() const {
  if (_opt.min_span == 0) return _cache.capacity;
  int64_t s = _opt.min_span;
  while (s <= _cache.length && s < _cache.capacity) s *= 2;
  return std::min(s, _cache.capacity);
}

torch::Tensor DecodeGraph::prefill(const torch::Tensor& tokens) {
  torch::NoGradGuard ng;
  if (!_pad.defined()) return _model.forward_last(tokens, &_cache);
  const int64_t S = _cache.length + tokens.size(-1);
  PATCHLLM_CHECK(tokens.dim() == 2 && S <= _cache.capacity, InvalidArgument, "decode graph prefill: tokens ",
                 tokens.sizes(), " after ", _cache.length, " cached do not fit capacity ", _cache.capacity);
  // 1 = token, 0 = padding: the slots before each row's padding end.
  auto keep = (_kpos.narrow(0, 0, S).view({1, -1}) >= _pad.view({-1, 1})).to(torch::kLong);
  return _model.forward_last(tokens, &_cache, keep);
}

torch::Tensor DecodeGraph::prefill_row(int64_t row, const torch::Tensor& tokens) {
  torch::NoGradGuard ng;
  const int64_t cur = _cache.length, n = tokens.dim() == 2 ? tokens.size(1) : 0;
  PATCHLLM_CHECK(
      _pad.defined() && row >= 0 && row < _batch && tokens.dim() == 2 && tokens.size(0) == 1 && n >= 1 && n <= cur,
      InvalidArgument, "decode graph prefill_row: needs left padding, a row in [0, ", _batch,
      ") and tokens [1, n] with 1 <= n <= ", cur, " cached slots; got row ", row, ", tokens ", tokens.sizes());
  _pads[static_cast<size_t>(row)] = cur - n;
  _pad[row].fill_(cur - n);
  // Its bucket padding lands in slots >= cur, which the next step writes (slot cur) or masks (kpos > pos) first.
  return _model.prefill_row(tokens, _cache, row, cur - n);
}

// Mirrors Model::make_context for one query at position _pos and Model::forward, without host reads.
torch::Tensor DecodeGraph::run(int64_t span) {
  const ModelConfig& c = _model.config;
  LayerContext ctx;
  ctx.cache_pos = _pos;
  ctx.cache_span = span;
  ctx.cache_pad = _pad;
  // RoPE position: the slot, less the row's padding (left padding: positions count real tokens only).
  auto pos = (_pad.defined() ? _pos - _pad : _pos).to(torch::kFloat32).view({-1, 1});  // [B or 1, T = 1]
  auto rope = [&](const torch::Tensor& inv, torch::Tensor& cos, torch::Tensor& sin) {
    auto freqs = pos.unsqueeze(-1) * inv.view({1, 1, -1});
    auto emb = torch::cat({freqs, freqs}, -1);
    cos = emb.cos().to(_model.dtype);
    sin = emb.sin().to(_model.dtype);
  };
  // [B or 1, 1, 1, span] additive: 0 where key slot <= pos (and pos - slot < window, and slot past the row's padding),
  // -inf elsewhere.
  auto kpos = _kpos.narrow(0, 0, span);
  auto mask = [&](int64_t window) {
    auto ok = kpos <= _pos;
    if (window > 0) ok = ok.logical_and((_pos - kpos) < window);
    ok = ok.view({1, -1});
    if (_pad.defined()) ok = ok.logical_and(kpos.view({1, -1}) >= _pad.view({-1, 1}));
    auto fopt = torch::TensorOptions().dtype(_model.dtype).device(_model.device);  // as Model::make_context
    return torch::zeros(ok.sizes(), fopt)
        .masked_fill(ok.logical_not(), -std::numeric_limits<float>::infinity())
        .view({ok.size(0), 1, 1, -1});
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
  const int64_t max_pad = _pads.empty() ? -1 : *std::max_element(_pads.begin(), _pads.end());
  PATCHLLM_CHECK(_cache.length > max_pad, InvalidArgument, "decode step at slot ", _cache.length,
                 " before a row's prompt (left padding ", max_pad, "): prefill the prompts first");
  torch::NoGradGuard ng;
  _tokens.copy_(tokens.reshape({_batch, 1}));
  _pos.fill_(_cache.length);
  const int64_t span = this->span();
  torch::Tensor out;
  _last_captured = false;
#ifdef PATCHLLM_TORCH_HAS_CUDA
  auto it = _graphs.find(span);
  if (it != _graphs.end()) {
    it->second->graph.replay();
    out = it->second->logits;
    _last_captured = true;
  } else if (_want_graph) {
    out = warm_up_and_capture(span);
  } else {
    out = run(span);
  }
#else
  if (_want_graph) {
    _want_graph = false;
    _fallback = "this LibTorch has no CUDA graphs";
    log_warn("decode graph: ", _fallback, "; decoding eagerly");
  }
  out = run(span);
#endif
  _cache.length += 1;
  return out;
}

#ifdef PATCHLLM_TORCH_HAS_CUDA
torch::Tensor DecodeGraph::warm_up_and_capture(int64_t span) {
  torch::cuda::synchronize();  // the prefill and the buffer copies are done before the side stream starts
  auto g = std::make_unique<Graph>();
  torch::Tensor out;
  bool captured = false;
  {
    c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool(false, _model.device.index()));
    // Warm-up: this token's real step, on the capture stream, so lazily made workspaces (hybrid kernels, cuBLAS)
    // exist before capture. Capture then records the same step without running it: the cache is written once.
    out = run(span);
    torch::cuda::synchronize();
    bool begun = false;
    try {
      g->graph.capture_begin();
      begun = true;
      g->logits = run(span);
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
    }
  }
  torch::cuda::synchronize();
  if (captured) {
    _graphs[span] = std::move(g);
    _last_captured = true;
  } else {
    _want_graph = false;  // every later step, whatever its span, runs eagerly
    log_warn("decode graph: CUDA graph capture failed (", _fallback, "); decoding eagerly");
  }
  return out.clone();  // on the current stream, independent of the side stream's memory
}
#else
torch::Tensor DecodeGraph::warm_up_and_capture(int64_t span) { return run(span); }
#endif

}  // namespace patchllm
