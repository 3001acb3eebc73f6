// The resumable state of a mask-learning run (OUT/learn_state.safetensors, `patchllm prune --method patch-* --resume`):
// the step reached, a key naming the run's settings and data, the learned logits by name, and AdamW's per-parameter
// state (step, both moments), as a safetensors file with a sha256 of its tensors in the metadata. Loading goes through
// the project's validated safetensors reader, never LibTorch's archive reader: that one, fuzzed, crashed on a damaged
// file (fuzz/fuzz_learn_state.cc). A state of another run, a tensor of another shape or dtype, a damaged or foreign
// file: each one patchllm::Error naming the file.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace patchllm {

struct StateTensor {
  std::string name;
  torch::Tensor t;  // a handle to the run's tensor: loading copies into it
};

// Written atomically (temp file, then rename). Checks the free disk space first; when it is short, throws if
// `required`, else warns and skips the save.
void save_learn_state(const std::string& path, int64_t step, const std::string& key,
                      const std::vector<StateTensor>& tensors, torch::optim::AdamW& opt, bool required);

// Reads a state written by save_learn_state into `tensors` and `opt` (whose parameters, in group order, must be the
// ones it was saved from); returns its step.
int64_t load_learn_state(const std::string& path, const std::string& key, const std::vector<StateTensor>& tensors,
                         torch::optim::AdamW& opt);

}  // namespace patchllm
