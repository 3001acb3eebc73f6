// Zero-shot task files (JSONL): the input's first line names the task (each has its own row format), the rest is the
// file. tools/fuzz.sh seeds it with the head of each ../shared/data/tasks file behind its name.
#include <algorithm>

#include "eval/tasks.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string in(reinterpret_cast<const char*>(data), n);
  const size_t eol = in.find('\n');
  if (eol == std::string::npos) return 0;
  const std::string name = in.substr(0, eol);
  const auto& names = patchllm::task_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) return 0;
  const std::string path =
      patchllm::fuzz::write_input(data + eol + 1, n - eol - 1, name + ".jsonl");
  PATCHLLM_FUZZ_EXPECT_ERRORS(patchllm::task_load(name, path));
  return 0;
}
