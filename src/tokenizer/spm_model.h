// SentencePiece ModelProto (.model) parsed without libsentencepiece (see spm_model.cc for why).
#pragma once
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace patchllm {

struct SpmModel {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int> types;  // TokenType numbering
  int model_type = 1;      // 1 unigram, 2 BPE, 3 word, 4 char (TrainerSpec defaults to unigram)
  bool byte_fallback = false;
  int unk_id = 0, bos_id = 1, eos_id = 2;
};

SpmModel spm_model_read(const std::string& path);  // FormatError naming the file on malformed input
// LLaMA-2 conventions: BOS added, EOS not.
TokenizerPtr tokenizer_load_spm_model(const std::string& path);

}  // namespace patchllm
