// safetensors reader: header JSON, offsets, dtypes, shapes, and the loads of every entry the reader admits.
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, "in.safetensors");
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    patchllm::SafetensorsFile f(path);
    for (const auto& [name, e] : f.entries()) {
      f.raw(name);
      if (e.end - e.begin <= (1u << 20)) f.load(name);
    }
  });
  return 0;
}
