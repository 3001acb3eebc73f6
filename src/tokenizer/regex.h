// PCRE2 (UTF + UCP, JIT when available) wrapper for HF pre-tokenizer patterns (internal header).
#pragma once
#include <pcre2.h>

#include <string>
#include <utility>
#include <vector>

namespace patchllm {

class Regex {
 public:
  // `origin` names the file in the FormatError thrown for a pattern PCRE2 rejects.
  Regex(const std::string& pattern, const std::string& origin);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches [begin, end) in `text` (valid UTF-8), left to right; empty matches are skipped.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& text) const;

 private:
  pcre2_code* _code = nullptr;
};

}  // namespace patchllm
