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
