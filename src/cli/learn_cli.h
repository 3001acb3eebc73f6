// `patchllm prune --method patch-tile|patch-joint|maskllm`: the mask-learning half of the prune subcommand
// (cmd_prune.cc owns the subcommand and the one-shot methods; cmd_learn.cc the learning options and the run).
#pragma once
#include <memory>
#include <string>

#include "cli/common.h"
#include "learn/patch_learn.h"

namespace patchllm::cli {

struct LearnCli {
  LearnOptions l;
  std::string prior = "wanda", prior_from;  // prior: wanda | magnitude | sparsegpt | maskllm-npz (--prior-from)
  bool theta_rule = false, export_hf = false;
};

// Adds the learning options (an option group) to the prune subcommand.
void add_learn_options(CLI::App* sub, LearnCli& o);
// Runs mask learning. model/file/out/seed/nsamples/seqlen/split_on/tile/force come from the prune options.
struct PruneCommon {
  std::string model, file, out, split_on, tile;
  int64_t nsamples = 0, seqlen = 0;
  uint64_t seed = 0;
  bool force = false;
  ModelLoadOptions load;
  std::string device_desc;
};
void run_learn(const PruneCommon& p, LearnCli& o);

}  // namespace patchllm::cli
