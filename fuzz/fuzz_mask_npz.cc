// MaskLLM mask_compressed.npz (a zip of .npy packbits arrays), read against the weight shapes of PATCHLLM_FUZZ_MODEL.
#include <cstdlib>

#include "fuzz_util.h"
#include "mask/mask.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  static const auto shapes = [] {
    const char* m = std::getenv("PATCHLLM_FUZZ_MODEL");
    if (!m) {
      std::fprintf(stderr, "fuzz_mask_npz: set PATCHLLM_FUZZ_MODEL to an HF model directory\n");
      std::exit(2);
    }
    return patchllm::mask_model_shapes(m);
  }();
  const std::string path = patchllm::fuzz::write_input(data, n, "mask_compressed.npz");
  PATCHLLM_FUZZ_EXPECT_ERRORS(patchllm::mask_load_npz(path, shapes));
  return 0;
}
