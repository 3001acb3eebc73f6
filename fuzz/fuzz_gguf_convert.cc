// GGUF -> Hugging Face conversion in memory: architecture and hyper-parameter mapping, tensor renaming and
// un-permuting, the tokenizer from tokenizer.ggml.*. What converts must give a config and a tokenizer that load.
#include "fuzz_util.h"
#include "io/gguf_convert.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, "model.gguf");
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    const patchllm::GgufHfModel m = patchllm::gguf_to_hf(path, /*fp32=*/true);
    patchllm::config_from_json(m.config, path);
    auto tok = patchllm::tokenizer_from_json(m.tokenizer, m.tokenizer_config, path);
    tok->decode(tok->encode("Hello world, 123", true), true);
  });
  return 0;
}
