// GGUF reader: header, metadata, tensor table, and the dequantisers on every tensor the table admits.
#include "fuzz_util.h"
#include "gguf/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, "in.gguf");
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    patchllm::GgufFile g(path);
    for (const auto& t : g.tensors()) {
      // The reader's bounds checks are what is under test; small tensors keep one run fast.
      if (t.n_elements <= (1 << 16)) PATCHLLM_FUZZ_EXPECT_ERRORS(g.dequantize(t));
    }
  });
  return 0;
}
