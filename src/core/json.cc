#include "core/json.h"

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

}  // namespace patchllm
