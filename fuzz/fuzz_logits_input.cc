// eval logits' input file (input_ids and attention_mask in safetensors): the reader and both checks; the model's
// vocabulary is taken as stories260K's 512.
#include "eval/logits_input.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, "ids.safetensors");
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    const patchllm::LogitInputs in = patchllm::load_logit_inputs(path);
    patchllm::check_ids_in_vocab(in.ids, path, 512);
  });
  return 0;
}
