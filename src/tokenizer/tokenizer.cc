// Loading by directory or file, and the streaming detokenizer.
#include "tokenizer/tokenizer.h"
#include "tokenizer/spm_model.h"

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "tokenizer/utf8.h"

#include <algorithm>

namespace patchllm {

using json = nlohmann::json;


namespace {

std::string dir_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

TokenizerPtr load_hf_json(const std::string& path) {
  json tj = json_read_file(path);
  std::string cfg_path = path_join(dir_of(path), "tokenizer_config.json");
  json cfg = file_exists(cfg_path) ? json_read_file(cfg_path) : json();
  return tokenizer_from_json(tj, cfg, path);
}

}  // namespace

TokenizerPtr tokenizer_load(const std::string& model_dir) {
  PATCHLLM_CHECK(dir_exists(model_dir), FormatError, model_dir, ": no such directory");
  std::string tj = path_join(model_dir, "tokenizer.json");
  if (file_exists(tj)) return load_hf_json(tj);
  std::string spm = path_join(model_dir, "tokenizer.model");
  if (file_exists(spm)) return tokenizer_load_spm_model(spm);
  throw FormatError(str(model_dir, ": no tokenizer.json or tokenizer.model"));
}

TokenizerPtr tokenizer_load_file(const std::string& path) {
  PATCHLLM_CHECK(file_exists(path), FormatError, path, ": no such file");
  if (ends_with(path, ".json")) return load_hf_json(path);
  if (ends_with(path, ".model")) return tokenizer_load_spm_model(path);
  if (ends_with(path, ".bin")) {
    json tj = tokenizer_json_from_llama2c(path);
    return tokenizer_from_json(tj, tokenizer_config_from_llama2c(path), path);
  }
  // Unknown extension: JSON starts with '{'; otherwise try SentencePiece's protobuf.
  std::string head = file_read(path).substr(0, 64);
  size_t i = head.find_first_not_of(" \t\r\n");
  if (i != std::string::npos && head[i] == '{') return load_hf_json(path);
  return tokenizer_load_spm_model(path);
}

// Text-generation-inference's scheme: decode a short window twice (before and after the new id) and emit the
// difference, holding back while the tail is an incomplete UTF-8 sequence (decoders render it as U+FFFD).
std::string StreamDecoder::push(int id) {
  _ids.push_back(id);
  std::vector<int> before(_ids.begin() + _prefix, _ids.begin() + _emitted);
  std::vector<int> after(_ids.begin() + _prefix, _ids.end());
  std::string prev = _tok.decode(before);
  std::string next = _tok.decode(after);
  const std::string repl = kUtf8Replacement;
  if (next.size() > prev.size() && !ends_with(next, repl) && next.compare(0, prev.size(), prev) == 0) {
    std::string out = next.substr(prev.size());
    _prefix = _emitted;
    _emitted = _ids.size();
    return out;
  }
  return "";
}

std::string StreamDecoder::flush() {
  std::vector<int> before(_ids.begin() + _prefix, _ids.begin() + _emitted);
  std::vector<int> after(_ids.begin() + _prefix, _ids.end());
  std::string prev = _tok.decode(before);
  std::string next = _tok.decode(after);
  _prefix = _emitted = _ids.size();
  if (next.size() > prev.size() && next.compare(0, prev.size(), prev) == 0) return next.substr(prev.size());
  return "";
}

StopStringDecoder::StopStringDecoder(const Tokenizer& tok, std::vector<std::string> stops)
    : _dec(tok), _stops(std::move(stops)) {
  for (const auto& st : _stops) PATCHLLM_CHECK(!st.empty(), InvalidArgument, "a stop string must not be empty");
}

void StopStringDecoder::prime(const std::vector<int>& ids) {
  for (int id : ids) _dec.push(id);
  _dec.flush();
}

std::string StopStringDecoder::push(int id) {
  if (_stopped) return "";
  _pending += _dec.push(id);
  // The earliest stop string in the pending text. None can start in text already returned: that text's every suffix
  // was no prefix of a stop string when it was returned.
  size_t cut = std::string::npos;
  for (const auto& st : _stops) cut = std::min(cut, _pending.find(st));
  if (cut != std::string::npos) {
    _stopped = true;
    std::string out = _pending.substr(0, cut);
    _pending.clear();
    return out;
  }
  // Hold back the longest tail that is a prefix of some stop string.
  size_t hold = 0;
  for (const auto& st : _stops)
    for (size_t k = std::min(st.size() - 1, _pending.size()); k > hold; --k)
      if (_pending.compare(_pending.size() - k, k, st, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = _pending.substr(0, _pending.size() - hold);
  _pending.erase(0, _pending.size() - hold);
  return out;
}

std::string StopStringDecoder::flush() {
  if (_stopped) return "";
  std::string out = _pending + _dec.flush();
  // The flushed tail may complete a stop string.
  size_t cut = std::string::npos;
  for (const auto& st : _stops) cut = std::min(cut, out.find(st));
  if (cut != std::string::npos) {
    _stopped = true;
    out.resize(cut);
  }
  _pending.clear();
  return out;
}

}  // namespace patchllm
