// MaskLLM mask_compressed.npz (a zip of .npy packbits arrays), read against the weight shapes of PATCHLLM_FUZZ_MODEL.
#include "fuzz_util.h"
#include "mask/mask.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  static const auto shapes =
      patchllm::mask_model_shapes(patchllm::fuzz::required_env("PATCHLLM_FUZZ_MODEL", "an HF model directory"));
  const std::string path = patchllm::fuzz::write_input(data, n, "mask_compressed.npz");
  PATCHLLM_FUZZ_EXPECT_ERRORS(patchllm::mask_load_npz(path, shapes));
  return 0;
}
