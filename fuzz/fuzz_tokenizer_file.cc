// Tokenizer files: built three times with PATCHLLM_FUZZ_EXT .json (HF tokenizer.json), .model (SentencePiece) and
// .bin (llama2.c), since tokenizer_load_file picks the parser by name. A file that loads must encode (valid UTF-8;
// fuzz_tokenizer_encode covers invalid text) and decode.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, std::string("tokenizer") + PATCHLLM_FUZZ_EXT);
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    auto tok = patchllm::tokenizer_load_file(path);
    const auto ids = tok->encode("Hello world, h\xc3\xa9llo \xe2\x96\x81 123 <s></s><|endoftext|>\n\t  x", true);
    tok->decode(ids, true);
    tok->decode(ids, false);
    for (int i = 0; i < tok->vocab_size() && i < 512; ++i) tok->token_text(i);
  });
  return 0;
}
