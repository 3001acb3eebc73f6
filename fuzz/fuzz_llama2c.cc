// llama2.c checkpoint conversion: the fuzzed model .bin with the tokenizer .bin of PATCHLLM_FUZZ_LLAMA2C_TOKENIZER
// (tools/fuzz.sh passes stories260K's tok512.bin), converted into a temp directory.
#include "fuzz_util.h"
#include "io/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  static const char* tok = patchllm::fuzz::required_env("PATCHLLM_FUZZ_LLAMA2C_TOKENIZER", "a llama2.c tokenizer.bin");
  const std::string path = patchllm::fuzz::write_input(data, n, "model.bin");
  PATCHLLM_FUZZ_EXPECT_ERRORS(
      patchllm::llama2c_convert_to_hf(path, tok, patchllm::fuzz::temp_dir() + "/llama2c-out", /*force=*/true));
  return 0;
}
