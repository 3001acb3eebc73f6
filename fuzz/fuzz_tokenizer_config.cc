// tokenizer_config.json beside a fixed, valid tokenizer.json (PATCHLLM_FUZZ_TOKENIZER_JSON): the config's keys
// (add_bos_token, add_eos_token, bos/eos tokens as strings or AddedToken objects, legacy, ...) change how encode adds
// special tokens, so a config that loads must encode and decode.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  static const std::string tokenizer_json = [] {
    const std::string src = patchllm::fuzz::required_env("PATCHLLM_FUZZ_TOKENIZER_JSON", "a valid tokenizer.json");
    const std::string dst = patchllm::fuzz::temp_dir() + "/tokenizer.json";
    patchllm::file_write_atomic(dst, patchllm::file_read(src));
    return dst;
  }();
  patchllm::fuzz::write_input(data, n, "tokenizer_config.json");
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    auto tok = patchllm::tokenizer_load_file(tokenizer_json);
    const auto ids = tok->encode("Hello world, h\xc3\xa9llo 123 <s></s><|endoftext|>\n", true);
    tok->decode(ids, true);
    tok->decode(ids, false);
  });
  return 0;
}
