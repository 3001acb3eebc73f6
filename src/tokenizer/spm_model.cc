// SentencePiece .model files read directly from their protobuf (ModelProto), then served by the HF BPE
// implementation through tokenizer_json_from_spm_pieces. Why not libsentencepiece: Debian's build embeds its own
// protobuf 3.14 runtime, which aborts at start-up in any process that also loads LibTorch's libprotobuf 3.21.
// libsentencepiece stays as an independent reference in the tokenizer tests only.
#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/spm_model.h"

namespace patchllm {
namespace {

struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  const std::string& path;

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      PATCHLLM_CHECK(p < end, FormatError, path, ": truncated protobuf varint");
      uint8_t b = *p++;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    throw FormatError(str(path, ": malformed protobuf varint"));
  }
  Reader sub() {
    uint64_t n = varint();
    PATCHLLM_CHECK(n <= static_cast<uint64_t>(end - p), FormatError, path, ": protobuf field length ", n,
                   " runs past the end of the file");
    Reader r{p, p + n, path};
    p += n;
    return r;
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: PATCHLLM_CHECK(end - p >= 8, FormatError, path, ": truncated protobuf"); p += 8; break;
      case 2: sub(); break;
      case 5: PATCHLLM_CHECK(end - p >= 4, FormatError, path, ": truncated protobuf"); p += 4; break;
      default: throw FormatError(str(path, ": not a SentencePiece model (protobuf wire type ", wire, ")"));
    }
  }
  float f32() {
    PATCHLLM_CHECK(end - p >= 4, FormatError, path, ": truncated protobuf float");
    float f;
    std::memcpy(&f, p, 4);
    p += 4;
    return f;
  }
};

}  // namespace

SpmModel spm_model_read(const std::string& path) {
  MappedFile f(path);
  Reader r{f.data(), f.data() + f.size(), path};
  SpmModel m;
  while (r.p < r.end) {
    uint64_t key = r.varint();
    int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 2) {  // repeated SentencePiece {1: piece, 2: score, 3: type}
      Reader s = r.sub();
      std::string piece;
      float score = 0;
      int type = TOKEN_TYPE_NORMAL;
      while (s.p < s.end) {
        uint64_t k = s.varint();
        int fld = static_cast<int>(k >> 3), w = static_cast<int>(k & 7);
        if (fld == 1 && w == 2) {
          Reader b = s.sub();
          piece.assign(reinterpret_cast<const char*>(b.p), b.end - b.p);
        } else if (fld == 2 && w == 5) {
          score = s.f32();
        } else if (fld == 3 && w == 0) {
          type = static_cast<int>(s.varint());
        } else {
          s.skip(w);
        }
      }
      m.pieces.push_back(std::move(piece));
      m.scores.push_back(score);
      m.types.push_back(type);
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      Reader t = r.sub();
      while (t.p < t.end) {
        uint64_t k = t.varint();
        int fld = static_cast<int>(k >> 3), w = static_cast<int>(k & 7);
        if (w != 0) {
          t.skip(w);
          continue;
        }
        int64_t v = static_cast<int64_t>(t.varint());
        if (fld == 3) m.model_type = static_cast<int>(v);
        if (fld == 35) m.byte_fallback = v != 0;
        if (fld == 40) m.unk_id = static_cast<int>(v);
        if (fld == 41) m.bos_id = static_cast<int>(v);
        if (fld == 42) m.eos_id = static_cast<int>(v);
      }
    } else {
      r.skip(wire);
    }
  }
  PATCHLLM_CHECK(!m.pieces.empty(), FormatError, path, ": no pieces (not a SentencePiece model?)");
  PATCHLLM_CHECK(m.model_type == 2, FormatError, path, ": SentencePiece model type ", m.model_type,
                 " is not BPE (2); only BPE models (LLaMA-2, Mistral) are supported");
  return m;
}

}  // namespace patchllm

namespace patchllm {

TokenizerPtr tokenizer_load_spm_model(const std::string& path) {
  SpmModel m = spm_model_read(path);
  TokenizerSpecials sp;
  sp.bos_id = m.bos_id;
  sp.eos_id = m.eos_id;
  sp.unk_id = m.unk_id;
  sp.add_bos = true;
  return tokenizer_from_json(tokenizer_json_from_spm_pieces(m.pieces, m.scores, m.types, sp),
                             tokenizer_config_from_spm_pieces(m.pieces, sp), path);
}

}  // namespace patchllm
