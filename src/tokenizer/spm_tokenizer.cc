// libsentencepiece-backed tokenizer: an independent reference for the tokenizer tests only. CMake compiles this file
// into the test_tokenizer* executables, never into patchllm_tokenizer: Debian's libsentencepiece embeds protobuf 3.14,
// which aborts in a process that also loads LibTorch's libprotobuf (the library reads .model files in spm_model.cc).
// LLaMA-2's BOS rule (BOS on, EOS off); special tokens written in the text are split out and each remaining segment
// encoded on its own, as HF's slow LlamaTokenizer (legacy=True) does.
#include <sentencepiece_processor.h>

#include <cstdio>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace patchllm {

namespace {

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(const std::string& path) : _path(path) {
    PATCHLLM_CHECK(file_exists(path), FormatError, path, ": no such file");
    auto st = _sp.Load(path);
    PATCHLLM_CHECK(st.ok(), FormatError, path, ": not a SentencePiece model (", st.ToString(), ")");
    for (int id = 0; id < _sp.GetPieceSize(); ++id)
      if (_sp.IsControl(id) || _sp.IsUnknown(id)) _specials.emplace_back(_sp.IdToPiece(id), id);
    // longest first, so that leftmost-longest matching falls out of a first-hit scan
    std::stable_sort(_specials.begin(), _specials.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  std::vector<int> encode(const std::string& text, bool add_special) const override {
    PATCHLLM_CHECK(utf8_valid(text), InvalidArgument, "tokenizer: input text is not valid UTF-8");
    std::vector<int> ids;
    if (add_special && _sp.bos_id() >= 0) ids.push_back(_sp.bos_id());
    size_t from = 0;
    auto encode_segment = [&](size_t b, size_t e) {
      if (e <= b) return;
      std::vector<int> part;
      auto st = _sp.Encode(text.substr(b, e - b), &part);
      PATCHLLM_CHECK(st.ok(), InvalidArgument, _path, ": SentencePiece encode failed (", st.ToString(), ")");
      ids.insert(ids.end(), part.begin(), part.end());
    };
    for (size_t i = 0; i < text.size();) {
      int hit = -1;
      size_t len = 0;
      for (auto& [piece, id] : _specials)
        if (text.compare(i, piece.size(), piece) == 0) {
          hit = id;
          len = piece.size();
          break;
        }
      if (hit < 0) {
        ++i;
        continue;
      }
      encode_segment(from, i);
      ids.push_back(hit);
      i += len;
      from = i;
    }
    encode_segment(from, text.size());
    return ids;
  }

  // Same chain as HF's LlamaTokenizerFast decoder: '▁' -> ' ', <0xNN> runs -> bytes, join, strip one leading space.
  std::string decode(const std::vector<int>& ids, bool skip_special) const override {
    std::string out, bytes;
    size_t nbytes = 0;
    auto flush = [&] {
      if (nbytes == 0) return;
      if (utf8_valid(bytes)) {
        out += bytes;
      } else {
        for (size_t k = 0; k < nbytes; ++k) out += kUtf8Replacement;
      }
      bytes.clear();
      nbytes = 0;
    };
    for (int id : ids) {
      PATCHLLM_CHECK(id >= 0 && id < vocab_size(), InvalidArgument, "tokenizer: id ", id, " is outside the vocabulary of ",
                     _path);
      bool special = _sp.IsControl(id) || _sp.IsUnknown(id);
      if (special && skip_special) continue;
      std::string piece = _sp.IdToPiece(id);
      unsigned v = 0;
      if (_sp.IsByte(id) && piece.size() == 6 && std::sscanf(piece.c_str() + 3, "%2x", &v) == 1) {
        bytes += static_cast<char>(v);
        ++nbytes;
        continue;
      }
      flush();
      for (size_t k = 0; k < piece.size();) {
        if (piece.compare(k, 3, kSpmSpace) == 0) {
          out += ' ';
          k += 3;
        } else {
          out += piece[k++];
        }
      }
    }
    flush();
    if (!out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  int vocab_size() const override { return _sp.GetPieceSize(); }
  int bos_id() const override { return _sp.bos_id(); }
  int eos_id() const override { return _sp.eos_id(); }
  std::string token_text(int id) const override {
    PATCHLLM_CHECK(id >= 0 && id < vocab_size(), InvalidArgument, "tokenizer: id ", id, " is outside the vocabulary");
    return _sp.IdToPiece(id);
  }

 private:
  std::string _path;
  sentencepiece::SentencePieceProcessor _sp;
  std::vector<std::pair<std::string, int>> _specials;  // control and unknown pieces, matched in text as HF does
};

}  // namespace

TokenizerPtr tokenizer_load_libsentencepiece(const std::string& path) { return std::make_unique<SpmTokenizer>(path); }

}  // namespace patchllm
