// Mask files: ours (.safetensors with the tile map, patterns and provenance), read and validated.
#include "fuzz_util.h"
#include "mask/mask.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, "masks.safetensors");
  PATCHLLM_FUZZ_EXPECT_ERRORS(patchllm::mask_load(path));
  return 0;
}
