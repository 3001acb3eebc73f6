#include "eval/logits_input.h"

#include "core/error.h"
#include "io/safetensors.h"

namespace patchllm {

LogitInputs load_logit_inputs(const std::string& path) {
  SafetensorsFile in(path);
  PATCHLLM_CHECK(in.has("input_ids"), FormatError, path, ": no tensor named 'input_ids'");
  const auto integer = [](const torch::Tensor& t) { return !t.is_floating_point() && !t.is_complex(); };
  LogitInputs r;
  r.ids = in.load("input_ids");
  PATCHLLM_CHECK(integer(r.ids) && r.ids.scalar_type() != torch::kBool, FormatError, path,
                 ": input_ids must be integers, got ", r.ids.scalar_type());
  PATCHLLM_CHECK(r.ids.dim() == 2 && r.ids.numel() > 0, FormatError, path,
                 ": input_ids must be a non-empty [batch, seq] tensor, got ", r.ids.sizes());
  r.ids = r.ids.to(torch::kLong);
  if (in.has("attention_mask")) {
    r.mask = in.load("attention_mask");
    PATCHLLM_CHECK(integer(r.mask) && r.mask.sizes() == r.ids.sizes(), FormatError, path,
                   ": attention_mask must be integers shaped like input_ids ", r.ids.sizes(), ", got ",
                   r.mask.scalar_type(), " ", r.mask.sizes());
    r.mask = r.mask.to(torch::kLong);
    PATCHLLM_CHECK(((r.mask == 0).logical_or(r.mask == 1)).all().item<bool>(), FormatError, path,
                   ": attention_mask values must be 0 or 1");
  }
  return r;
}

void check_ids_in_vocab(const torch::Tensor& ids, const std::string& path, int64_t vocab) {
  const auto bad = (ids < 0).logical_or(ids >= vocab).nonzero();
  if (bad.size(0) == 0) return;
  const int64_t b = bad[0][0].item<int64_t>(), t = bad[0][1].item<int64_t>();
  throw FormatError(str(path, ": input_ids[", b, ", ", t, "] = ", ids[b][t].item<int64_t>(),
                        " is outside the vocabulary [0, ", vocab, ")"));
}

}  // namespace patchllm
