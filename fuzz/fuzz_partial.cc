// The partial files of resumable jobs (OUT.partial of `eval ppl --json OUT`, `eval tasks --json OUT`; the shared
// check of `generate --prompts -o OUT`): partial_read with the run key, then the perplexity state and the finished
// tasks read from the same input. With PATCHLLM_FUZZ_WRITE_SEED=PATH the target first writes a valid file holding
// both (tools/fuzz.sh makes its seed so), then fuzzes as usual.
#include <cstdlib>

#include "core/file.h"
#include "eval/ppl.h"
#include "eval/tasks.h"
#include "fuzz_util.h"

namespace {

const nlohmann::json& run_key() {
  static const nlohmann::json k = {{"model", "m"}, {"batch", 2}, {"tasks", {"arc_easy"}}};
  return k;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seed = std::getenv("PATCHLLM_FUZZ_WRITE_SEED")) {
    patchllm::PplState st{4, 508, 612.25, 1001.5, 3.5};
    patchllm::TaskResult r;
    r.name = "arc_easy", r.n = 3, r.acc = 2.0 / 3, r.acc_stderr = 0.33, r.acc_norm = 1.0 / 3, r.acc_norm_stderr = 0.3;
    r.samples = nlohmann::json::array({{{"line", 1}, {"pred", 0}, {"loglik", {-1.5, -2.25}}}});
    nlohmann::json j = {{"run", run_key()},
                        {"state", st.to_json()},
                        {"done", {{"arc_easy", {{"result", r.to_json()}, {"samples", r.samples}}}}},
                        {"current", patchllm::task_current_json("piqa", 2, {{-1.5, true}, {-0.25, false}})}};
    patchllm::file_write_atomic(seed, j.dump());
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, "out.json.partial");
  PATCHLLM_FUZZ_EXPECT_ERRORS(patchllm::ppl_partial_read(path, run_key()));
  PATCHLLM_FUZZ_EXPECT_ERRORS(patchllm::task_partial_read(path, run_key()));
  return 0;
}
