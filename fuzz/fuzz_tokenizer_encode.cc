// Encoding arbitrary bytes (invalid UTF-8 included) with a real tokenizer, and decoding arbitrary ids. The tokenizer
// file comes from PATCHLLM_FUZZ_TOKENIZER (tools/fuzz.sh sets it). Invalid UTF-8 and ids outside the vocabulary may
// only be refused with a patchllm::Error; text that encodes must decode and stream.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  static const patchllm::TokenizerPtr tok =
      patchllm::tokenizer_load_file(patchllm::fuzz::required_env("PATCHLLM_FUZZ_TOKENIZER", "a tokenizer file"));
  const std::string text(reinterpret_cast<const char*>(data), n);
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    const auto ids = tok->encode(text, true);
    tok->decode(ids, true);
    patchllm::StreamDecoder stream(*tok);
    for (int id : ids) stream.push(id);
    stream.flush();
  });
  std::vector<int> raw;  // little-endian int16 pairs, shifted so that negative ids occur
  for (size_t i = 0; i + 1 < n; i += 2) raw.push_back(static_cast<int16_t>(data[i] | (data[i + 1] << 8)));
  PATCHLLM_FUZZ_EXPECT_ERRORS(tok->decode(raw, false));
  return 0;
}
