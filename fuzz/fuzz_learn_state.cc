// The mask-learning state file (OUT/learn_state.safetensors, read by `patchllm prune --method patch-* --resume`),
// loaded into a run's tensors and an AdamW optimizer. (Its first format, a LibTorch archive, crashed LibTorch's
// reader here within 500 inputs; learn_state.h.) With PATCHLLM_FUZZ_WRITE_SEED=PATH the target first writes a
// valid state of this run there (tools/fuzz.sh makes its seed so), then fuzzes as usual.
#include <cstdlib>

#include "fuzz_util.h"
#include "learn/learn_state.h"

namespace {

const char* const KEY = "fuzz-run";

// A run's tensors as the learner has them (tile logits and 2:4 pattern logits, fp32) and its optimizer, fresh for
// each input so that one input's partial load cannot change the next one's.
struct Run {
  torch::Tensor theta = torch::zeros({3, 4}), phi = torch::zeros({2, 6, 5});
  torch::optim::AdamW opt{std::vector<torch::Tensor>{theta.requires_grad_(), phi.requires_grad_()},
                          torch::optim::AdamWOptions(1e-2)};
  std::vector<patchllm::StateTensor> tensors() const { return {{"theta.0", theta}, {"phi.1", phi}}; }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seed = std::getenv("PATCHLLM_FUZZ_WRITE_SEED")) {
    Run r;
    {  // one optimizer step, so that the seed carries AdamW's moments
      torch::NoGradGuard ng;
      r.theta.uniform_(-1, 1);
      r.phi.uniform_(-1, 1);
    }
    (r.theta.square().sum() + r.phi.square().sum()).backward();
    r.opt.step();
    patchllm::save_learn_state(seed, 7, KEY, r.tensors(), r.opt, /*required=*/true);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  const std::string path = patchllm::fuzz::write_input(data, n, "learn_state.safetensors");
  Run r;
  PATCHLLM_FUZZ_EXPECT_ERRORS(patchllm::load_learn_state(path, KEY, r.tensors(), r.opt));
  return 0;
}
