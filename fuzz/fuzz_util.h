// Shared by the libFuzzer targets: each writes the input to a per-process temp file and hands its path to a loader,
// because every loader reads files (mmap). Only patchllm::Error may escape a loader; anything else (c10::Error,
// nlohmann exceptions, std::bad_alloc, a signal, a sanitizer report) is a finding and stops the fuzzer.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/file.h"

namespace patchllm::fuzz {

inline bool verbose() {
  static const bool v = std::getenv("PATCHLLM_FUZZ_VERBOSE") != nullptr;
  return v;
}

// The value of an environment variable a target needs (tools/fuzz.sh sets it); exit 2 naming it when unset.
inline const char* required_env(const char* name, const char* what) {
  const char* v = std::getenv(name);
  if (!v) {
    std::fprintf(stderr, "fuzz: set %s to %s\n", name, what);
    std::exit(2);
  }
  return v;
}

// $TMPDIR/patchllm-fuzz-<pid>, removed when the fuzzer exits normally (kept after a crash, beside the artifact).
inline std::string temp_dir() {
  // Never destroyed: the atexit handler is registered inside this initialiser, so it would run after the destructor.
  static const std::string* dir = [] {
    const char* base = std::getenv("TMPDIR");
    auto* d = new std::string(base && *base ? base : "/tmp");
    *d += "/patchllm-fuzz-" + std::to_string(getpid());
    dir_create(*d);
    std::atexit([] { dir_remove_all(temp_dir()); });
    return d;
  }();
  return *dir;
}

// Writes the fuzz input to <temp_dir>/<name> and returns the path.
inline std::string write_input(const uint8_t* data, size_t n, const std::string& name) {
  const std::string path = temp_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (n && std::fwrite(data, 1, n, f) != n) || std::fclose(f) != 0) std::abort();
  return path;
}

}  // namespace patchllm::fuzz

// Runs `body`; a patchllm::Error is the expected answer to bad input, everything else escapes. With
// PATCHLLM_FUZZ_VERBOSE=1 the errors are printed (why a seed is refused: run the target with -runs=0 on the seeds).
#define PATCHLLM_FUZZ_EXPECT_ERRORS(body)                                                         \
  try {                                                                                           \
    body;                                                                                         \
  } catch (const ::patchllm::Error& e) {                                                          \
    if (::patchllm::fuzz::verbose()) std::fprintf(stderr, "fuzz: patchllm::Error: %s\n", e.what()); \
  }
