#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <set>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/log.h"
#include "model/decode_graph.h"
#include "model/profile.h"

namespace patchllm {

void check_sampling_options(const SamplingOptions& opt) {
  PATCHLLM_CHECK(opt.temperature >= 0, InvalidArgument, "--temp must be >= 0, got ", opt.temperature);
  PATCHLLM_CHECK(opt.top_p > 0 && opt.top_p <= 1, InvalidArgument, "--top-p must be in (0, 1], got ", opt.top_p);
  PATCHLLM_CHECK(opt.top_k >= 0, InvalidArgument, "--top-k must be >= 0, got ", opt.top_k);
  PATCHLLM_CHECK(opt.repetition_penalty > 0, InvalidArgument, "--repetition-penalty must be > 0, got ",
                 opt.repetition_penalty);
  PATCHLLM_CHECK(opt.max_new_tokens >= 0, InvalidArgument, "-n must be >= 0, got ", opt.max_new_tokens);
}

Sampler::Sampler(const SamplingOptions& opt) : _opt(opt), _state(opt.seed * 0x9E3779B97F4A7C15ull + 1) {
  check_sampling_options(opt);
}

int Sampler::sample(const torch::Tensor& logits_in, const std::vector<int>& seen) {
  // Greedy with nothing to penalise, on a GPU: the argmax runs there and one id comes back, not the vocabulary.
  if (_opt.temperature == 0 && (_opt.repetition_penalty == 1.0 || seen.empty()) && !logits_in.device().is_cpu())
    return static_cast<int>(logits_in.argmax().item<int64_t>());
  auto logits = logits_in.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = logits.numel();
  if (_opt.repetition_penalty != 1.0 && !seen.empty()) {
    logits = logits.clone();  // .to() may have returned the caller's tensor
    float* l = logits.data_ptr<float>();
    const float p = static_cast<float>(_opt.repetition_penalty);
    std::vector<bool> done(static_cast<size_t>(n), false);  // each id once, however often it was seen
    for (int id : seen) {
      if (id < 0 || id >= n || done[static_cast<size_t>(id)]) continue;
      done[static_cast<size_t>(id)] = true;
      l[id] = l[id] > 0 ? l[id] / p : l[id] * p;
    }
  }
  if (_opt.temperature == 0) return static_cast<int>(logits.argmax().item<int64_t>());
  auto probs = torch::softmax(logits / _opt.temperature, -1);
  const float* p = probs.data_ptr<float>();
  // xorshift64*: a recorded, portable generator (std distributions differ between standard libraries).
  _state ^= _state >> 12, _state ^= _state << 25, _state ^= _state >> 27;
  const double r = static_cast<double>((_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
  const int64_t k = _opt.top_k > 0 ? std::min<int64_t>(_opt.top_k, n) : n;
  double all = 0;  // without top-k the kept mass is all of it, summed in id order (nothing to sort for it)
  if (k == n)
    for (int64_t i = 0; i < n; ++i) all += p[i];
  // Ids ranked by probability, ties by id, as keys that sort descending in that order: the float's bits (p >= 0, so
  // they order as the values do) above the complemented id. Only ids with p >= tau are ranked, a prefix of the order;
  // returns -1 when the draw needs ids beyond them. The ranked prefix keys[0, sorted) grows on demand (a heap, or
  // nth_element and a sort, for the new part), so a peaked distribution ranks a few hundred ids, not the vocabulary
  // (a full sort cost 15-19 ms per row and step at a 128K-152K vocabulary: bench/bench_sampler).
  std::vector<uint64_t> keys;
  auto draw = [&](float tau) -> int64_t {
    keys.clear();
    for (int64_t i = 0; i < n; ++i)
      if (p[i] >= tau) {
        uint32_t bits;
        std::memcpy(&bits, &p[i], sizeof bits);
        keys.push_back(uint64_t(bits) << 32 | ~uint32_t(i));
      }
    const int64_t m = static_cast<int64_t>(keys.size()), kk = std::min(k, m);
    int64_t sorted = 0;
    auto at = [&](int64_t j) {  // the j-th ranked id, j < kk
      if (j >= sorted) {
        const int64_t want = std::min<int64_t>(kk, std::max<int64_t>({j + 1, 2 * sorted, 256}));
        if (want - sorted <= 1024) {  // a heap of the few wanted: about one comparison per remaining id
          std::partial_sort(keys.begin() + sorted, keys.begin() + want, keys.end(), std::greater<>());
        } else {
          if (want < m) std::nth_element(keys.begin() + sorted, keys.begin() + want, keys.end(), std::greater<>());
          std::sort(keys.begin() + sorted, keys.begin() + want, std::greater<>());
        }
        sorted = want;
      }
      return static_cast<int64_t>(~uint32_t(keys[size_t(j)]));
    };
    if (kk < k) return -1;  // top-k reaches below tau
    double total = all;     // under top-k: the k kept, in rank order
    if (k < n) {
      total = 0;
      for (int64_t j = 0; j < k; ++j) total += p[at(j)];
    }
    // Nucleus (renormalised over the k kept, as HF's top-p after top-k): the smallest prefix whose share of the
    // kept mass reaches top_p.
    double mass = total;
    int64_t keep = k;
    if (_opt.top_p < 1) {
      mass = 0, keep = 0;
      while (keep < k && (keep == 0 || mass < _opt.top_p * total)) {
        if (keep == m) return -1;
        mass += p[at(keep++)];
      }
    }
    double u = r * mass;
    for (int64_t j = 0; j < keep; ++j) {
      if (j == m) return -1;
      const int64_t id = at(j);
      u -= p[id];
      if (u <= 0) return id;
    }
    return keep <= m ? at(keep - 1) : -1;
  };
  // First only the ids within 2^-12 of the most likely one, then 2^-24, then all: a trained model's draw nearly
  // always ends among the first (Qwen2.5-Coder-0.5B-Instruct on 68 tokens of code and prose at temperature 0.8: a
  // median of 849 ids lie within 2^-30 of the top, and the 0.9 nucleus is a median of 1 id); a random model's needs
  // them all.
  const float top = *std::max_element(p, p + n);
  for (float tau : {top * 0x1p-12f, top * 0x1p-24f})
    if (const int64_t id = draw(tau); id >= 0) return static_cast<int>(id);
  const int64_t id = draw(0.0f);  // ranks every id but a NaN's
  PATCHLLM_CHECK(id >= 0, InvalidArgument, "sampling: the model's logits hold NaN");
  return static_cast<int>(id);
}

namespace {

// Positions past max_position_embeddings are refused unless RoPE scaling extends them.
void check_fits(const Model& model, int64_t total, const char* what) {
  PATCHLLM_CHECK(total <= model.config.max_position || model.config.rope_scaling.type != "none", InvalidArgument, what,
                 " = ", total, " exceeds the model's max_position_embeddings ", model.config.max_position);
}

}  // namespace

std::vector<int> generate(Model& model, const std::vector<int>& prompt, const SamplingOptions& opt,
                          const std::function<void(int)>& on_token, GenerateStats* stats, const StopCheck& stop) {
  PATCHLLM_CHECK(!prompt.empty(), InvalidArgument, "generation needs at least one prompt token");
  torch::NoGradGuard ng;
  SdpaCudnnOff no_cudnn_plans(model.device);  // each prompt length is a new attention shape
  const int64_t total = static_cast<int64_t>(prompt.size()) + opt.max_new_tokens;
  check_fits(model, total, "prompt + new tokens");
  Sampler sampler(opt);
  std::vector<int64_t> p64(prompt.begin(), prompt.end());
  auto sync = [&] {
    if (model.device.is_cuda()) torch::cuda::synchronize();
  };
  // Eager: Model::forward with a cache. Static: prefill eagerly into the graph's cache, then fixed-shape steps.
  KVCache cache;
  std::unique_ptr<DecodeGraph> graph;
  if (opt.decode_graph)
    graph = std::make_unique<DecodeGraph>(model, 1, total);
  else
    cache = model.make_cache(1, total);
  auto step = [&](int64_t id) -> torch::Tensor {  // logits [vocab] of the next position
    auto t = torch::tensor({id}).view({1, 1});
    return graph ? graph->step(t)[0] : model.forward(t, &cache)[0][-1];
  };
  double t0 = now_seconds();
  auto prompt_t = torch::tensor(p64).view({1, -1});
  auto logits = graph ? graph->prefill(prompt_t) : model.forward_last(prompt_t, &cache);  // [1, vocab]
  std::vector<int> seen = prompt;  // what the repetition penalty applies to
  int next = sampler.sample(logits[0], seen);
  sync();
  double t1 = now_seconds();
  std::vector<int> out;
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    out.push_back(next);
    seen.push_back(next);
    if (on_token) on_token(next);
    if (stop && stop(0, next)) break;
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) break;
    if (i + 1 == opt.max_new_tokens) break;
    next = sampler.sample(step(next), seen);
  }
  sync();
  if (stats) {
    stats->prompt_tokens = static_cast<int64_t>(prompt.size());
    stats->generated_tokens = static_cast<int64_t>(out.size());
    stats->prompt_seconds = t1 - t0;
    stats->decode_seconds = now_seconds() - t1;
  }
  return out;
}

std::vector<std::vector<int>> generate_batch(Model& model, const std::vector<std::vector<int>>& prompts,
                                             const SamplingOptions& opt, GenerateStats* stats, const StopCheck& stop,
                                             int64_t rows) {
  PATCHLLM_CHECK(!prompts.empty(), InvalidArgument, "generate_batch: no prompts");
  PATCHLLM_CHECK(rows >= 0, InvalidArgument, "generate_batch: rows must be >= 0, got ", rows);
  int64_t longest = 0, prompt_tokens = 0;
  for (const auto& p : prompts) {
    PATCHLLM_CHECK(!p.empty(), InvalidArgument, "generation needs at least one prompt token in every prompt");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
    prompt_tokens += static_cast<int64_t>(p.size());
  }
  check_fits(model, longest + opt.max_new_tokens, "longest prompt + new tokens");
  torch::NoGradGuard ng;
  SdpaCudnnOff no_cudnn_plans(model.device);  // each prompt length is a new attention shape
  const int64_t P = static_cast<int64_t>(prompts.size()), R = rows > 0 ? std::min(rows, P) : P;
  const int64_t max_new = opt.max_new_tokens;
  auto sync = [&] {
    if (model.device.is_cuda()) torch::cuda::synchronize();
  };
  std::vector<std::vector<int>> out(static_cast<size_t>(P));
  double prompt_seconds = 0, decode_seconds = 0;
  int64_t next_prompt = 0;
  std::vector<GenerateStats::Refill> refills;
  // PATCHLLM_PROFILE=FILE with PATCHLLM_PROFILE_REFILLS=K[,K...]: the K-th refills of this call under the Kineto
  // profiler, each saved to FILE.K (tools/profile_summary.py).
  const char* profile_path = std::getenv("PATCHLLM_PROFILE");
  std::set<int64_t> profile_refills;
  if (const char* l = std::getenv("PATCHLLM_PROFILE_REFILLS"); profile_path && l) {
    std::stringstream ss(l);
    for (std::string k; std::getline(ss, k, ',');) profile_refills.insert(std::atoll(k.c_str()));
  }
  int64_t n_refills = 0;
  while (next_prompt < P && max_new > 0) {
    // One wave: a KV cache (and DecodeGraph) for B rows, left-padded to the longest of their first prompts. With
    // prompts left over, the cache has max_new more slots, and a row whose prompt is done takes the next prompt as
    // long as it fits before the current slot and its generation fits before the end.
    const int64_t B = std::min(R, P - next_prompt);
    const bool refill = next_prompt + B < P;
    int64_t L = 0;
    for (int64_t b = 0; b < B; ++b)
      L = std::max<int64_t>(L, static_cast<int64_t>(prompts[size_t(next_prompt + b)].size()));
    const int64_t C = L + max_new + (refill ? max_new : 0);
    // Row b's prompt fills slots [pad_b, L); the pad slots hold token 0 and are masked out. Host buffers, not
    // element-by-element tensor indexing.
    std::vector<int64_t> tok(static_cast<size_t>(B * L), 0), keep(static_cast<size_t>(B * C), 1), pads;
    std::vector<int64_t> row_prompt(static_cast<size_t>(B), -1);  // the prompt a row generates for, -1: idle
    for (int64_t b = 0; b < B; ++b) {
      const auto& p = prompts[size_t(next_prompt + b)];
      const int64_t pad = L - static_cast<int64_t>(p.size());
      std::copy(p.begin(), p.end(), tok.begin() + b * L + pad);
      std::fill(keep.begin() + b * C, keep.begin() + b * C + pad, 0);
      pads.push_back(pad);
      row_prompt[size_t(b)] = next_prompt + b;
    }
    next_prompt += B;
    auto mask = torch::tensor(keep).view({B, C});  // eager path; refills rewrite a row
    KVCache cache;
    std::unique_ptr<DecodeGraph> graph;
    if (opt.decode_graph) {
      DecodeGraphOptions go;
      go.left_pad = pads;
      if (!refill && std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; }))
        go.left_pad.clear();  // no padding ever: the plain step (one RoPE row and mask for the batch)
      graph = std::make_unique<DecodeGraph>(model, B, C, go);
    } else {
      cache = model.make_cache(B, C);
    }
    // Per row: its sampler (seeded opt.seed, as generate() for the prompt alone) and what the penalty applies to.
    std::vector<Sampler> samplers(static_cast<size_t>(B), Sampler(opt));
    std::vector<std::vector<int>> seen(static_cast<size_t>(B));
    std::vector<int> next(static_cast<size_t>(B), 0);
    // Greedy with no penalty: the argmax runs on the logits' device and only the rows' ids come to the host, not
    // [B, vocab] fp32 to scan row by row.
    const bool device_argmax = opt.temperature == 0 && opt.repetition_penalty == 1.0;
    auto to_host = [&](const torch::Tensor& logits) {  // [R, vocab] -> [R] ids or [R, vocab] fp32, on the host
      return (device_argmax ? logits.argmax(-1) : logits).to(torch::kCPU);
    };
    auto pick = [&](size_t b, const torch::Tensor& row) {  // row: of to_host's result
      return device_argmax ? static_cast<int>(row.item<int64_t>()) : samplers[b].sample(row, seen[b]);
    };
    double t0 = now_seconds();
    auto last = to_host(graph ? graph->prefill(torch::tensor(tok).view({B, L}))
                              : model.forward_last(torch::tensor(tok).view({B, L}), &cache, mask.narrow(1, 0, L)));
    for (size_t b = 0; b < size_t(B); ++b) {
      seen[b] = prompts[size_t(row_prompt[b])];
      next[b] = pick(b, last[int64_t(b)]);
    }
    sync();
    prompt_seconds += now_seconds() - t0;
    t0 = now_seconds();
    // Row b emits next[b]: appended to its prompt's output; true when that output is finished.
    auto emit = [&](size_t b) {
      auto& o = out[size_t(row_prompt[b])];
      o.push_back(next[b]);
      seen[b].push_back(next[b]);
      const bool stopped = stop && stop(size_t(row_prompt[b]), next[b]);  // first: it sees every id
      return stopped || static_cast<int64_t>(o.size()) == max_new ||
             std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next[b]) != opt.stop_ids.end();
    };
    for (int64_t cur = L;; ++cur) {  // cur: the slot the next step writes
      bool any = false;
      for (size_t b = 0; b < size_t(B); ++b) {
        while (row_prompt[b] >= 0 && emit(b)) {
          row_prompt[b] = -1;
          const int64_t n = next_prompt < P ? static_cast<int64_t>(prompts[size_t(next_prompt)].size()) : 0;
          if (!refill || next_prompt >= P || n > cur || cur + max_new > C) break;  // idle from now on
          // Refill: the next prompt into this row's slots [cur - n, cur); its first id (from that prefill) is emitted
          // at once, like every row's first id after the wave's prefill.
          const double tp = now_seconds();
          KinetoWindow profiler(profile_refills.count(++n_refills) ? str(profile_path, ".", n_refills) : "");
          profiler.begin();
          const auto& p = prompts[size_t(next_prompt)];
          auto ids = torch::tensor(std::vector<int64_t>(p.begin(), p.end())).view({1, n});
          torch::Tensor logits;  // [1, vocab]
          if (graph) {
            logits = graph->prefill_row(int64_t(b), ids);
          } else {
            mask[int64_t(b)].narrow(0, 0, cur - n).zero_();
            mask[int64_t(b)].narrow(0, cur - n, C - (cur - n)).fill_(1);
            // Bucket padding goes to slots >= cur: the next step appends at cur, and its mask stops at cur + 1.
            logits = model.prefill_row(ids, cache, int64_t(b), cur - n);
          }
          row_prompt[b] = next_prompt++;
          samplers[b] = Sampler(opt);
          seen[b] = p;
          next[b] = pick(b, to_host(logits)[0]);
          sync();
          const double dt = now_seconds() - tp;
          profiler.end("refill " + std::to_string(n_refills));
          prompt_seconds += dt;
          t0 += now_seconds() - tp;  // prefill time is not decode time (nor is the profiler's)
          refills.push_back({n, refill_length(n, C - (cur - n)), dt});
        }
        any = any || row_prompt[b] >= 0;
      }
      if (!any) break;
      // Idle rows still step (token 0, output ignored), so the batch keeps one shape.
      std::vector<int64_t> t64(size_t(B), 0);
      for (size_t b = 0; b < size_t(B); ++b)
        if (row_prompt[b] >= 0) t64[b] = next[b];
      auto t = torch::tensor(t64).view({B, 1});
      last = to_host(graph ? graph->step(t) : model.forward(t, &cache, mask.narrow(1, 0, cur + 1)).select(1, 0));
      for (size_t b = 0; b < size_t(B); ++b)
        if (row_prompt[b] >= 0) next[b] = pick(b, last[int64_t(b)]);
    }
    sync();
    decode_seconds += now_seconds() - t0;
  }
  if (stats) {
    stats->prompt_tokens = prompt_tokens;
    stats->generated_tokens = 0;
    for (const auto& o : out) stats->generated_tokens += static_cast<int64_t>(o.size());
    stats->prompt_seconds = prompt_seconds;
    stats->decode_seconds = decode_seconds;
    stats->refills = std::move(refills);
  }
  return out;
}

}  // namespace patchllm
