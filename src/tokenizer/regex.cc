#include "tokenizer/regex.h"

#include <memory>

#include "core/error.h"

namespace patchllm {

Regex::Regex(const std::string& pattern, const std::string& origin) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  _code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                        &err_off, nullptr);
  if (!_code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    throw FormatError(str(origin, ": pre-tokenizer regex rejected by PCRE2 at offset ", err_off, " (",
                          reinterpret_cast<const char*>(buf), "): ", pattern));
  }
  pcre2_jit_compile(_code, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
}

Regex::~Regex() { pcre2_code_free(_code); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(const std::string& text) const {
  std::vector<std::pair<size_t, size_t>> out;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(_code, nullptr), &pcre2_match_data_free);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    // The caller validated the UTF-8 once; skip PCRE2's per-call check (it would make this loop quadratic).
    int rc = pcre2_match(_code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    PATCHLLM_CHECK(rc >= 0, InvalidArgument, "tokenizer: PCRE2 match failed with code ", rc);
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    size_t b = ov[0], e = ov[1];
    if (e == b) {  // empty match: step one code point
      if (b >= text.size()) break;
      pos = b + 1;
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    out.emplace_back(b, e);
    pos = e;
  }
  return out;
}

}  // namespace patchllm
