// Autoregressive generation with a KV cache: greedy at temperature 0, else temperature + top-p sampling (seeded).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"

namespace patchllm {

// As HF generate() applies them: the repetition penalty to the raw logits (also when greedy), then temperature, top-k
// and top-p.
struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;
  int64_t top_k = 0;                // keep the k most likely ids before top-p; 0 = all
  double repetition_penalty = 1.0;  // HF's: the logit l of every id already in the prompt or the output becomes
                                    // l / p if l > 0, else l · p (> 1 discourages repeats; 1 = off)
  uint64_t seed = 0;
  int64_t max_new_tokens = 128;
  std::vector<int64_t> stop_ids;  // generation ends after emitting one of these
  // Decode through a DecodeGraph (fixed-shape steps; on CUDA captured once as a CUDA graph and replayed, eager
  // fallback with one warning if capture fails). Off: Model::forward per token.
  bool decode_graph = false;
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prompt_seconds = 0, decode_seconds = 0;
  // generate_batch's refills, in order: the prompt's length, the length its prefill ran at (refill_bucket, cut at
  // the cache's end) and the wall time of the prefill and the first sample (part of prompt_seconds).
  struct Refill {
    int64_t tokens = 0, bucket = 0;
    double seconds = 0;
  };
  std::vector<Refill> refills;
};

// Called with a prompt's index (0 for generate) and each id generated for it, in order, before any other stop rule is
// looked at; true ends that prompt's output after this id (text-level rules such as stop strings: StopStringDecoder).
using StopCheck = std::function<bool(size_t prompt, int id)>;

// Returns the generated ids (prompt excluded). on_token is called for every generated id as soon as it exists.
std::vector<int> generate(Model& model, const std::vector<int>& prompt, const SamplingOptions& opt,
                          const std::function<void(int)>& on_token = {}, GenerateStats* stats = nullptr,
                          const StopCheck& stop = {});

// Several prompts decoded together, `rows` at a time (0: all), with continuous batching: the first `rows` prompts are
// left-padded to the longest of them, with an attention mask, so every row is computed as it would be alone (RoPE
// positions count real tokens only) up to rounding; a row whose prompt is done (stop id, `stop`, max_new_tokens)
// takes the next prompt, prefilled into that row's slots before the current one. The cache then has max_new_tokens
// extra slots; when a prompt no longer fits, a new wave with its own cache starts. Rows left idle still step (ids
// ignored), so the batch keeps one shape. Each prompt samples with its own Sampler seeded opt.seed, so at temperature
// 0, and with the same seed, output[i] is what generate() gives for prompts[i] alone, up to rounding. stop is called
// with the prompt's index. opt.decode_graph decodes through a DecodeGraph (CUDA graphs on CUDA), else Model::forward
// per step. stats: tokens summed over the prompts; prefill time (refills included) is prompt time.
std::vector<std::vector<int>> generate_batch(Model& model, const std::vector<std::vector<int>>& prompts,
                                             const SamplingOptions& opt, GenerateStats* stats = nullptr,
                                             const StopCheck& stop = {}, int64_t rows = 0);

// InvalidArgument unless temperature >= 0, top_p in (0, 1], top_k >= 0, repetition_penalty > 0 and max_new_tokens >= 0
// (Sampler checks it too; the CLI calls it before anything loads).
void check_sampling_options(const SamplingOptions& opt);

// Picks the next id from fp32 logits [vocab]; `seen` (the prompt and the ids generated so far) is what the repetition
// penalty applies to. Exposed for tests.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opt);
  int sample(const torch::Tensor& logits, const std::vector<int>& seen = {});

 private:
  SamplingOptions _opt;
  uint64_t _state;
};

}  // namespace patchllm
