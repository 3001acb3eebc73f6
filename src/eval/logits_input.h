// eval logits' input file: token ids (and an optional attention mask) for a raw-logits run, checked before a model
// sees them, so that each problem is one line naming the file (the model's own checks do not name it, and a float
// file would otherwise be truncated to ids silently).
#pragma once
#include <torch/torch.h>

#include <string>

namespace patchllm {

struct LogitInputs {
  torch::Tensor ids;   // [B, T] int64, T > 0
  torch::Tensor mask;  // [B, T] int64 of 0 / 1, or undefined
};
// Reads `input_ids` (integers, [B, T], non-empty) and the optional `attention_mask` (0/1 integers of the same shape)
// from a safetensors file; FormatError naming the file otherwise.
LogitInputs load_logit_inputs(const std::string& path);
// Every id in [0, vocab); FormatError naming the file and the first id outside otherwise.
void check_ids_in_vocab(const torch::Tensor& ids, const std::string& path, int64_t vocab);

}  // namespace patchllm
