// JSON files: one reader, so that every JSON error (syntax, a number out of range, bad UTF-8) reaches the caller as
// one FormatError naming the file.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace patchllm {

// Parses the whole file; FormatError "<path>: malformed JSON (...)" for any nlohmann exception, and file_read's
// error for a missing or unreadable file.
nlohmann::json json_read_file(const std::string& path);
// The partial file of a resumable job (OUT.partial: results so far plus "run", the key of the command that wrote
// it): its JSON object. InvalidArgument naming the file when it is not an object or its "run" differs from `run`
// (another command's, or malformed: delete it to start over); FormatError when it is not JSON.
nlohmann::json partial_read(const std::string& path, const nlohmann::json& run);
// Writes body with "run" set to `run` to path atomically: what partial_read reads back.
void partial_write(const std::string& path, const nlohmann::json& run, nlohmann::json body);

// JSON Lines: fn(line number, "<path>:<line>", value, the line's text) for each non-blank line of text (split on
// '\n', a trailing '\r' dropped), in order, until fn returns false. FormatError "<path>:<line>: malformed JSON (...)"
// or "...: not a JSON object" for a line that is not one JSON object. (The text is for a caller that needs the keys
// in file order: nlohmann::ordered_json::parse of it cannot fail.)
using JsonlLineFn =
    std::function<bool(int64_t line, const std::string& where, const nlohmann::json&, const std::string& text)>;
void jsonl_for_each(const std::string& path, const std::string& text, const JsonlLineFn& fn);

// True and *out = v when v is an integer in [lo, hi]. False for floats (1e22), strings, and out-of-range integers,
// where nlohmann's get<int>() is undefined or wraps. Callers word their own FormatError.
bool json_int_in(const nlohmann::json& v, int64_t lo, int64_t hi, int64_t* out);

}  // namespace patchllm
