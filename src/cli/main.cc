// patchllm: one binary, subcommands (convert, inspect, generate, eval, ...).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/provenance.h"
#include "ops/hybrid_linear.h"
#include "ops/layer_ops.h"

int main(int argc, char** argv) {
  patchllm::provenance_set_argv(argc, argv);
  CLI::App app{"patchllm " + patchllm::version_string() +
               ": PATCH hybrid dense/2:4 sparsity for LLaMA-family models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", patchllm::version_string());
  int verbose = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbose, "more logging (debug)");
  app.add_flag("-q,--quiet", quiet, "errors only");
  int threads = 0;
  app.add_option("-t,--threads", threads, "CPU threads (0 = LibTorch default)")->envname("PATCHLLM_ARG_THREADS");
  std::string hybrid_kernel = "pdl";
  app.add_option("--hybrid-kernel", hybrid_kernel,
                 "launch options of the CUDA hybrid kernels for packed models (docs/BENCHMARKS.md §4): plain (all "
                 "off), or '+'-joined pdl (the default; decode: programmatic dependent launch of the hybrid and "
                 "fused layer kernels), cluster or workspace (decode: k-splits summed in a thread-block cluster "
                 "wherever the plan picks it, or never; the default uses the cluster except where it takes the row "
                 "split), rows (decode, M <= 16: "
                 "row split without k-split on every shape, not only where the default takes it), batched "
                 "(prefill: one wgmma group per slab), onebatch (decode, M <= 16: one load batch in flight per "
                 "warp, the kernels before session 24, to compare) and sharex (prefill, M > 32: v7, persistent "
                 "2-CTA clusters sharing x; generate and eval then give every packed linear a prefill image, a "
                 "second copy of the weight in the layout its descriptors read)")
      ->check([](const std::string& v) {
        try {
          patchllm::parse_hybrid_kernel_options(v);
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      });
  std::string layer_ops = "fused";
  app.add_option("--layer-ops", layer_ops,
                 "norms, RoPE (with the KV-cache write) and SwiGLU on CUDA: fused (one kernel each, ops/layer_ops.h) "
                 "or reference (the LibTorch compositions they are tested against)")
      ->check(CLI::IsMember({"fused", "reference"}));
  app.parse_complete_callback([&] {
    patchllm::set_hybrid_kernel_options(patchllm::parse_hybrid_kernel_options(hybrid_kernel));
    patchllm::set_fused_layer_ops(layer_ops == "fused");
    if (verbose) patchllm::log_set_level(patchllm::LogLevel::DEBUG);
    if (quiet) patchllm::log_set_level(patchllm::LogLevel::ERROR);
    if (threads > 0) torch::set_num_threads(threads);
  });
  patchllm::cli::register_convert(app);
  patchllm::cli::register_inspect(app);
  patchllm::cli::register_generate(app);
  patchllm::cli::register_eval(app);
  patchllm::cli::register_prune(app);
  patchllm::cli::register_export(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help/version or the usage error
    return code == 0 ? 0 : 2;  // usage errors exit 2
  } catch (const patchllm::Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
