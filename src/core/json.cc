#include "core/json.h"

#include <cstdint>

#include "core/error.h"
#include "core/file.h"

namespace patchllm {

nlohmann::json json_read_file(const std::string& path) {
  const std::string text = file_read(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for numbers such as 1e999
    throw FormatError(str(path, ": malformed JSON (", e.what(), ")"));
  }
}

nlohmann::json partial_read(const std::string& path, const nlohmann::json& run) {
  nlohmann::json p = json_read_file(path);
  PATCHLLM_CHECK(p.is_object() && p.contains("run") && p["run"] == run, InvalidArgument, path,
                 ": written by another run (the command's inputs or settings differ) or malformed; delete it to start "
                 "over");
  return p;
}

void partial_write(const std::string& path, const nlohmann::json& run, nlohmann::json body) {
  body["run"] = run;
  file_write_atomic(path, body.dump());
}

void jsonl_for_each(const std::string& path, const std::string& text, const JsonlLineFn& fn) {
  size_t pos = 0;
  for (int64_t line = 1; pos < text.size(); ++line) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string s = text.substr(pos, end - pos);
    pos = end + 1;
    if (!s.empty() && s.back() == '\r') s.pop_back();
    if (s.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines (a trailing newline) are no rows
    const std::string where = str(path, ":", line);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(s);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(str(where, ": malformed JSON (", e.what(), ")"));
    }
    PATCHLLM_CHECK(j.is_object(), FormatError, where, ": not a JSON object");
    if (!fn(line, where, j, s)) return;
  }
}

bool json_int_in(const nlohmann::json& v, int64_t lo, int64_t hi, int64_t* out) {
  int64_t x;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return false;
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    return false;
  }
  if (x < lo || x > hi) return false;
  *out = x;
  return true;
}

}  // namespace patchllm
