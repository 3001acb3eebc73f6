// Test helpers: locate ../shared (tests that need it skip, saying why), temp dirs, running the CLI binary.
#pragma once
#include <gtest/gtest.h>

#include <string>

namespace patchllm::test {

// ../shared beside the checkout (or $PATCHLLM_SHARED_DIR); empty if absent.
std::string shared_dir();
// Path under shared_dir(), or GTEST_SKIP()s the calling test when ../shared is absent.
#define PATCHLLM_REQUIRE_SHARED(var, rel)                                                   \
  std::string var = ::patchllm::test::shared_dir();                                         \
  if (var.empty()) GTEST_SKIP() << "../shared is absent (set PATCHLLM_SHARED_DIR); skipping"; \
  var += "/" rel

std::string temp_dir(const std::string& tag);  // fresh directory under the build tree's temp root

struct CliResult {
  int code = -1;
  std::string out, err;
};
// Runs the patchllm binary with the given argument string (shell-quoted by the caller).
CliResult run_cli(const std::string& args);
std::string source_dir();
// stories260K (shared_model_dir = ../shared/models/stories260K) converted once per test executable with
// `patchllm convert --from llama2c`; "" (and a test failure) when the conversion fails.
std::string stories260k_hf(const std::string& shared_model_dir);

}  // namespace patchllm::test
