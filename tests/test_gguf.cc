// GGUF reader/writer/dequantiser against gguf-py golden files (tools/gguf_make_testdata.py), hand-computed blocks,
// and corrupted / truncated variants of the golden files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "gguf/gguf.h"
#include "test_util.h"

namespace patchllm {
namespace {

std::string data_path(const std::string& name) { return test::source_dir() + "/tests/data/gguf/" + name; }

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Writes `bytes` to a fresh temp file and returns its path.
std::string write_temp(const std::string& bytes, const std::string& name = "x.gguf") {
  static std::string dir = test::temp_dir("gguf");
  std::string p = dir + "/" + name;
  file_write_atomic(p, bytes);
  return p;
}

// Opening `bytes` must throw a one-line FormatError naming the file and containing `what`.
void expect_format_error(const std::string& bytes, const std::string& what) {
  std::string p = write_temp(bytes);
  try {
    GgufFile f(p);
    ADD_FAILURE() << "expected FormatError containing '" << what << "', file parsed";
  } catch (const FormatError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "message lacks '" << what << "': " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
  }
}

template <typename T>
void poke(std::string& bytes, size_t at, T v) {
  ASSERT_LE(at + sizeof(T), bytes.size());
  std::memcpy(&bytes[at], &v, sizeof(T));
}

// Offset just past the key string `key` (u64 length + bytes) in the raw file: where its u32 value type starts.
size_t after_key(const std::string& bytes, const std::string& key) {
  std::string needle(8, '\0');
  uint64_t n = key.size();
  std::memcpy(&needle[0], &n, 8);
  needle += key;
  size_t at = bytes.find(needle);
  EXPECT_NE(at, std::string::npos) << key;
  return at + needle.size();
}

// ---------------------------------------------------------------------------------------------------------------
// Dequantisation

TEST(Gguf, DequantMatchesGgufPy) {
  GgufFile q(data_path("quants.gguf"));
  GgufFile ref(data_path("quants_ref.gguf"));
  EXPECT_EQ(q.version(), 3u);
  ASSERT_EQ(q.tensors().size(), ref.tensors().size());
  int checked = 0;
  for (const auto& rt : ref.tensors()) {
    SCOPED_TRACE(rt.name);
    const GgufTensor& t = q.tensor(rt.name);
    EXPECT_EQ(t.ne, rt.ne);
    if (rt.name != "cube") {
      EXPECT_STREQ(gguf_ggml_type_name(t.type), rt.name.c_str());
    }
    ASSERT_EQ(rt.type, GgmlType::F32);
    std::vector<float> got = q.dequantize(t), want = ref.dequantize(rt);
    ASSERT_EQ(got.size(), want.size());
    const bool kquant = rt.name.size() == 4 && rt.name.substr(2) == "_K";
    size_t mismatches = 0;
    double max_rel = 0;
    for (size_t k = 0; k < got.size(); ++k) {
      if (bits_of(got[k]) == bits_of(want[k])) continue;
      double rel = std::fabs(double(got[k]) - want[k]) / std::max(1e-30, std::fabs(double(want[k])));
      max_rel = std::max(max_rel, rel);
      if (!kquant || !(rel <= 1e-6)) {
        if (++mismatches <= 5)
          ADD_FAILURE() << "element " << k << ": got " << got[k] << " (0x" << std::hex << bits_of(got[k])
                        << ") want " << want[k] << " (0x" << bits_of(want[k]) << std::dec << ")";
      }
    }
    EXPECT_EQ(mismatches, 0u) << "max relative error " << max_rel;
    if (max_rel > 0) std::cout << rt.name << ": not bit-exact, max relative error " << max_rel << "\n";
    ++checked;
  }
  EXPECT_EQ(checked, 14);  // F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K..Q6_K cube
}

TEST(Gguf, CubeShapeIsNeReversed) {
  GgufFile q(data_path("quants.gguf"));
  const GgufTensor& t = q.tensor("cube");
  EXPECT_EQ(t.ne, (std::vector<int64_t>{4, 3, 2}));
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 3, 4}));
  std::vector<float> v = q.dequantize(t);
  // Row-major [2,3,4]: element [1][2][3] = index 23 = 23 * 0.5 - 3.
  EXPECT_EQ(v[1 * 12 + 2 * 4 + 3], 8.5f);
}

TEST(Gguf, HandComputedBlocks) {
  // Q4_0: d = 0.5 (fp16 0x3800); byte j holds low nibble j and high nibble 15 - j.
  uint8_t q4[18];
  q4[0] = 0x00;
  q4[1] = 0x38;
  for (int j = 0; j < 16; ++j) q4[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[256];
  gguf_dequantize(GgmlType::Q4_0, q4, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f);
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f);
  }
  // Q8_K: f32 d = 0.25, qs[j] = j - 128, then 16 i16 bsums that dequantisation ignores.
  uint8_t q8k[292];
  float d = 0.25f;
  std::memcpy(q8k, &d, 4);
  for (int j = 0; j < 256; ++j) q8k[4 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 128));
  std::memset(q8k + 260, 0x7f, 32);
  gguf_dequantize(GgmlType::Q8_K, q8k, y, 256);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(y[j], (j - 128) * 0.25f);
  // Q6_K with every 6-bit value 32 (so q = 0) except element 0 = 63 (q = 31), scale[0] = -2, d = 1: y[0] = -62.
  uint8_t q6[210] = {};
  for (int j = 0; j < 128; ++j) q6[j] = 0x00;
  for (int j = 0; j < 64; ++j) q6[128 + j] = 0xAA;  // high bits 2 = 0b10 for all four positions -> 32
  q6[0] = 0x0F;
  q6[128] = 0xAB;  // element 0 high bits 0b11 -> 0x3F = 63
  for (int j = 0; j < 16; ++j) q6[192 + j] = static_cast<uint8_t>(static_cast<int8_t>(j == 0 ? -2 : 3));
  q6[208] = 0x00;
  q6[209] = 0x3c;  // d = 1.0
  gguf_dequantize(GgmlType::Q6_K, q6, y, 256);
  EXPECT_EQ(y[0], -62.0f);
  for (int j = 1; j < 256; ++j) ASSERT_EQ(y[j], 0.0f) << j;
  EXPECT_THROW(gguf_dequantize(GgmlType::Q4_0, q4, y, 31), InvalidArgument);
  EXPECT_THROW(gguf_dequantize(GgmlType::IQ2_XS, q4, y, 256), InvalidArgument);
}

TEST(Gguf, HalfConversions) {
  // Every non-NaN half survives fp16 -> fp32 -> fp16; spot values and round-to-nearest-even.
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = gguf_fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(gguf_fp32_to_fp16(f), h) << h;
  }
  EXPECT_EQ(gguf_fp16_to_fp32(0x3c00), 1.0f);
  EXPECT_EQ(gguf_fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(gguf_fp16_to_fp32(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(gguf_fp16_to_fp32(0xfc00)));
  EXPECT_EQ(gguf_fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie -> even
  EXPECT_EQ(gguf_fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(gguf_fp32_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(gguf_fp32_to_fp16(65520.0f), 0x7c00);
  EXPECT_EQ(gguf_fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);               // tie -> even (zero)
  EXPECT_EQ(gguf_fp32_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(gguf_fp32_to_fp16(-std::ldexp(3.0f, -25)), 0x8002);              // tie between 1 and 2 -> 2
  EXPECT_EQ(gguf_fp32_to_fp16(std::nanf("")) & 0x7e00, 0x7e00);
  EXPECT_EQ(gguf_fp32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(gguf_fp32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);         // tie -> even
  EXPECT_EQ(gguf_fp32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(gguf_fp32_to_bf16(std::nanf("")) & 0x7fc0, 0x7fc0);
  EXPECT_EQ(gguf_bf16_to_fp32(0xc040), -3.0f);
}

// ---------------------------------------------------------------------------------------------------------------
// Metadata

TEST(Gguf, EveryMetadataType) {
  GgufFile f(data_path("meta.gguf"));
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  auto type = [&](const char* k) { return f.get(k).type; };
  EXPECT_EQ(type("t.u8"), GgufType::UINT8);
  EXPECT_EQ(f.get_int("t.u8"), 250);
  EXPECT_EQ(type("t.i8"), GgufType::INT8);
  EXPECT_EQ(f.get_int("t.i8"), -120);
  EXPECT_EQ(type("t.u16"), GgufType::UINT16);
  EXPECT_EQ(f.get_int("t.u16"), 65000);
  EXPECT_EQ(type("t.i16"), GgufType::INT16);
  EXPECT_EQ(f.get_int("t.i16"), -32000);
  EXPECT_EQ(type("t.u32"), GgufType::UINT32);
  EXPECT_EQ(f.get_int("t.u32"), 4000000000LL);
  EXPECT_EQ(type("t.i32"), GgufType::INT32);
  EXPECT_EQ(f.get_int("t.i32"), -2000000000LL);
  EXPECT_EQ(type("t.f32"), GgufType::FLOAT32);
  EXPECT_EQ(f.get_float("t.f32"), static_cast<double>(0.1f));
  EXPECT_EQ(type("t.bool_true"), GgufType::BOOL);
  EXPECT_TRUE(f.get_bool("t.bool_true", false));
  EXPECT_FALSE(f.get_bool("t.bool_false", true));
  EXPECT_EQ(type("t.str"), GgufType::STRING);
  EXPECT_EQ(f.get_string("t.str"), "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80");
  EXPECT_EQ(type("t.u64"), GgufType::UINT64);
  EXPECT_EQ(static_cast<uint64_t>(f.get("t.u64").i), 18000000000000000000ULL);
  EXPECT_THROW(f.get_int("t.u64"), FormatError);  // does not fit int64
  EXPECT_EQ(type("t.i64"), GgufType::INT64);
  EXPECT_EQ(f.get_int("t.i64"), -9000000000000000000LL);
  EXPECT_EQ(type("t.f64"), GgufType::FLOAT64);
  EXPECT_EQ(f.get_float("t.f64"), 2.718281828459045);

  auto arr = [&](const char* k, GgufType elem) -> const GgufValue& {
    const GgufValue& v = f.get(k);
    EXPECT_EQ(v.type, GgufType::ARRAY) << k;
    EXPECT_EQ(v.elem_type, elem) << k;
    return v;
  };
  EXPECT_EQ(arr("t.arr_u8", GgufType::UINT8).ints, (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(arr("t.arr_i8", GgufType::INT8).ints, (std::vector<int64_t>{-128, 0, 127}));
  EXPECT_EQ(arr("t.arr_u16", GgufType::UINT16).ints, (std::vector<int64_t>{0, 65535}));
  EXPECT_EQ(arr("t.arr_i16", GgufType::INT16).ints, (std::vector<int64_t>{-32768, 32767}));
  EXPECT_EQ(arr("t.arr_u32", GgufType::UINT32).ints, (std::vector<int64_t>{1, 4294967295LL}));
  EXPECT_EQ(arr("t.arr_i32", GgufType::INT32).ints, (std::vector<int64_t>{-5, 6, -7}));
  EXPECT_EQ(static_cast<uint64_t>(arr("t.arr_u64", GgufType::UINT64).ints.at(0)), (1ULL << 63) + 5);
  EXPECT_EQ(arr("t.arr_i64", GgufType::INT64).ints, (std::vector<int64_t>{-(1LL << 62), 1LL << 62}));
  EXPECT_EQ(arr("t.arr_f32", GgufType::FLOAT32).floats,
            (std::vector<double>{1.5, -0.25, static_cast<double>(3.0e38f)}));
  EXPECT_EQ(arr("t.arr_f64", GgufType::FLOAT64).floats, (std::vector<double>{1e-300, -2.5}));
  EXPECT_EQ(arr("t.arr_bool", GgufType::BOOL).ints, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(f.get_strings("t.arr_str"), (std::vector<std::string>{"a", "", "\xc3\xbc\xc3\x9f"}));
  const GgufValue& n1 = arr("t.arr_nested", GgufType::ARRAY);
  ASSERT_EQ(n1.size(), 3u);
  EXPECT_EQ(n1.arrays[0].elem_type, GgufType::INT32);
  EXPECT_EQ(n1.arrays[0].ints, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(n1.arrays[1].ints, (std::vector<int64_t>{3}));
  EXPECT_EQ(n1.arrays[2].ints, (std::vector<int64_t>{4, 5, 6}));
  const GgufValue& n2 = arr("t.arr_nested2", GgufType::ARRAY);
  ASSERT_EQ(n2.size(), 2u);
  ASSERT_EQ(n2.arrays[0].elem_type, GgufType::ARRAY);
  EXPECT_EQ(n2.arrays[0].arrays[1].strings, (std::vector<std::string>{"y", "z"}));
  EXPECT_EQ(n2.arrays[1].arrays[0].strings, (std::vector<std::string>{"w"}));

  // Type errors and missing keys name the file and the key.
  EXPECT_THROW(f.get_string("t.u8"), FormatError);
  EXPECT_THROW(f.get_int("t.str"), FormatError);
  EXPECT_THROW(f.get_strings("t.arr_u8"), FormatError);
  EXPECT_THROW(f.get("no.such.key"), FormatError);
  EXPECT_EQ(f.get_int("no.such.key", 7), 7);

  // Tensors: a F32 [2,3] and an I32 [2], each at a multiple of 64 in the data section.
  const GgufTensor& a = f.tensor("a");
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.dequantize(a), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  const GgufTensor& b = f.tensor("b");
  EXPECT_EQ(b.type, GgmlType::I32);
  EXPECT_EQ(b.offset, 64u);
  EXPECT_EQ(f.dequantize(b), (std::vector<float>{7, 8}));
  EXPECT_EQ(f.find_tensor("c"), nullptr);
  EXPECT_THROW(f.tensor("c"), FormatError);
}

TEST(Gguf, Version2Parses) {
  std::string bytes = file_read(data_path("meta.gguf"));
  poke<uint32_t>(bytes, 4, 2);
  GgufFile f(write_temp(bytes));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get_int("t.i32"), -2000000000LL);
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

TEST(Gguf, WriterMatchesGgufPy) {
  // Same content as tools/gguf_make_testdata.py build_writer_ref().
  std::vector<float> f32(256);
  std::vector<uint16_t> f16(256), bf16(256);
  for (int k = 0; k < 256; ++k) {
    const float n = static_cast<float>(k);
    f32[k] = n * 0.125f - 7.0f;
    const float a = n * 0.01f;
    f16[k] = gguf_fp32_to_fp16(a - 1.0f);
    const float b = n * -0.3f;
    bf16[k] = gguf_fp32_to_bf16(b + 2.0f);
  }
  GgufWriter w;
  w.add_kv("general.architecture", GgufValue::make_string("llama"));
  w.add_kv("general.name", GgufValue::make_string("tiny"));
  w.add_kv("llama.block_count", GgufValue::make_int(GgufType::UINT32, 2));
  w.add_kv("llama.attention.layer_norm_rms_epsilon", GgufValue::make_float(GgufType::FLOAT32, 1e-5));
  w.add_kv("llama.use_parallel_residual", GgufValue::make_bool(false));
  w.add_kv("tokenizer.ggml.tokens", GgufValue::make_string_array({"<s>", "</s>", "a b"}));
  w.add_kv("tokenizer.ggml.scores", GgufValue::make_float_array(GgufType::FLOAT32, {0.0, -1.5, 2.25}));
  w.add_kv("tokenizer.ggml.token_type", GgufValue::make_int_array(GgufType::INT32, {3, 3, 1}));
  w.add_tensor("w.f32", GgmlType::F32, {64, 4}, f32.data(), 256 * 4);
  w.add_tensor("w.f16", GgmlType::F16, {64, 4}, f16.data(), 256 * 2);
  w.add_tensor("w.bf16", GgmlType::BF16, {64, 4}, bf16.data(), 256 * 2);
  w.add_tensor("v.f32", GgmlType::F32, {3}, f32.data(), 12);
  std::string want = file_read(data_path("writer_ref.gguf"));
  std::string got = w.serialize();
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) ASSERT_EQ(got[k], want[k]) << "first differing byte at " << k;

  std::string p = write_temp("", "written.gguf");
  w.write(p);
  EXPECT_EQ(file_read(p), want);
  GgufFile r(p);
  EXPECT_EQ(r.get_strings("tokenizer.ggml.tokens")[2], "a b");
  EXPECT_EQ(r.get_float("llama.attention.layer_norm_rms_epsilon"), static_cast<double>(1e-5f));
  std::vector<float> back = r.dequantize(r.tensor("w.f16"));
  for (int k = 0; k < 256; ++k) ASSERT_EQ(back[k], gguf_fp16_to_fp32(f16[k]));
  EXPECT_EQ(r.dequantize(r.tensor("v.f32")), (std::vector<float>{-7.0f, -6.875f, -6.75f}));

  // Custom alignment is recorded as general.alignment and honoured.
  GgufWriter w2;
  w2.set_alignment(128);
  w2.add_tensor("x", GgmlType::F32, {3}, f32.data(), 12);
  w2.add_tensor("y", GgmlType::F32, {2}, f32.data(), 8);
  GgufFile r2(write_temp(w2.serialize(), "aligned.gguf"));
  EXPECT_EQ(r2.alignment(), 128u);
  EXPECT_EQ(r2.tensor("y").offset, 128u);
  EXPECT_EQ(r2.data_offset() % 128, 0u);

  EXPECT_THROW(w2.add_tensor("z", GgmlType::F32, {3}, f32.data(), 8), InvalidArgument);   // size mismatch
  EXPECT_THROW(w2.add_tensor("x", GgmlType::F32, {2}, f32.data(), 8), InvalidArgument);   // duplicate
  EXPECT_THROW(w2.add_tensor("q", GgmlType::Q4_0, {16}, f32.data(), 9), InvalidArgument);  // not a block multiple
  EXPECT_THROW(w2.set_alignment(48), InvalidArgument);
}

TEST(Gguf, UnsupportedTypeIsClearError) {
  std::vector<uint8_t> raw(74, 0x11);  // one IQ2_XS block
  GgufWriter w;
  w.add_tensor("blk.0.ffn_up.weight", GgmlType::IQ2_XS, {256}, raw.data(), raw.size());
  std::string p = write_temp(w.serialize(), "iq.gguf");
  GgufFile f(p);  // parsing works: the type's size is known
  try {
    f.dequantize(f.tensor("blk.0.ffn_up.weight"));
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("unsupported tensor type IQ2_XS in " + p), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Corrupt and truncated files

TEST(Gguf, EveryTruncationIsAnError) {
  for (const char* name : {"meta.gguf", "writer_ref.gguf"}) {
    SCOPED_TRACE(name);
    const std::string bytes = file_read(data_path(name));
    uint64_t data_end = 0;
    {
      GgufFile f(data_path(name));
      for (const auto& t : f.tensors()) data_end = std::max(data_end, f.data_offset() + t.offset + t.n_bytes);
    }
    for (size_t len = 0; len < bytes.size(); ++len) {
      std::string p = write_temp(bytes.substr(0, len));
      if (len >= data_end) {
        EXPECT_NO_THROW(GgufFile{p}) << len;  // only the last tensor's trailing padding is missing
        continue;
      }
      try {
        GgufFile f(p);
        ADD_FAILURE() << "prefix of " << len << " bytes parsed";
      } catch (const FormatError& e) {
        ASSERT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      }
    }
  }
}

TEST(Gguf, CorruptHeaders) {
  const std::string good = file_read(data_path("meta.gguf"));
  std::string b;

  b = good; b[0] = 'X';
  expect_format_error(b, "not a GGUF file");
  b = good; poke<uint32_t>(b, 4, 4);
  expect_format_error(b, "unsupported GGUF version 4");
  b = good; poke<uint32_t>(b, 4, 1);
  expect_format_error(b, "version 1 is not supported");
  b = good; poke<uint32_t>(b, 4, 0x03000000u);
  expect_format_error(b, "big-endian");
  b = good; poke<uint64_t>(b, 8, 1ULL << 60);
  expect_format_error(b, "tensors, more than the file");
  b = good; poke<uint64_t>(b, 16, ~0ULL);
  expect_format_error(b, "metadata entries, more than the file");
  expect_format_error("", "truncated");
  expect_format_error("GGUF", "truncated");
}

TEST(Gguf, CorruptMetadata) {
  const std::string good = file_read(data_path("meta.gguf"));
  std::string b;

  // Array count far beyond the file: rejected before allocating.
  b = good; poke<uint64_t>(b, after_key(good, "t.arr_u8") + 8, 1ULL << 62);
  expect_format_error(b, "claims 4611686018427387904 elements");
  b = good; poke<uint64_t>(b, after_key(good, "t.arr_str") + 8, 1ULL << 40);
  expect_format_error(b, "claims");
  // String length past the end.
  b = good; poke<uint64_t>(b, after_key(good, "t.str") + 4, 1ULL << 63);
  expect_format_error(b, "truncated");
  // Invalid value type, invalid array element type, invalid bool byte.
  b = good; poke<uint32_t>(b, after_key(good, "t.u8"), 13);
  expect_format_error(b, "invalid value type 13");
  b = good; poke<uint32_t>(b, after_key(good, "t.arr_i32") + 4, 99);
  expect_format_error(b, "invalid array element type 99");
  b = good; poke<uint8_t>(b, after_key(good, "t.bool_true") + 4, 2);
  expect_format_error(b, "invalid byte 2");
  // Duplicate key (t.i8 renamed to t.u8).
  b = good; b[after_key(good, "t.i8") - 2] = 'u';
  expect_format_error(b, "duplicate metadata key 't.u8'");
  // Key length absurd.
  b = good; poke<uint64_t>(b, after_key(good, "t.u16") - 5 - 8, 1ULL << 50);
  expect_format_error(b, "exceeds the limit");
  // Alignment not a power of two.
  b = good; poke<uint32_t>(b, after_key(good, "general.alignment") + 4, 48);
  expect_format_error(b, "not a power of two");
  b = good; poke<uint32_t>(b, after_key(good, "general.alignment") + 4, 0);
  expect_format_error(b, "not a power of two");

  // Arrays nested deeper than 8 levels.
  GgufValue v = GgufValue::make_int_array(GgufType::INT8, {1});
  for (int k = 0; k < 10; ++k) v = GgufValue::make_nested_array({v});
  GgufWriter w;
  w.add_kv("deep", v);
  expect_format_error(w.serialize(), "nests arrays deeper");
}

TEST(Gguf, CorruptTensorInfos) {
  const std::string good = file_read(data_path("meta.gguf"));
  // Tensor info of "b": u64 len 1, "b", u32 n_dims 1, u64 ne[0] 2, u32 type 26 (I32), u64 offset 64.
  std::string needle(8, '\0');
  needle[0] = 1;
  needle += "b";
  size_t at = good.find(needle + std::string("\x01\0\0\0", 4));
  ASSERT_NE(at, std::string::npos);
  const size_t ndims = at + 9, ne0 = ndims + 4, type = ne0 + 8, offset = type + 4;
  std::string b;

  b = good; poke<uint64_t>(b, offset, 64 * 1000);
  expect_format_error(b, "past the end");
  b = good; poke<uint64_t>(b, offset, 65);
  expect_format_error(b, "not a multiple of the alignment 64");
  b = good; poke<uint64_t>(b, offset, 0);
  expect_format_error(b, "overlap");
  b = good; poke<uint32_t>(b, ndims, 5);
  expect_format_error(b, "has 5 dims");
  b = good; poke<uint32_t>(b, ndims, 0);
  expect_format_error(b, "has 0 dims");
  b = good; poke<uint32_t>(b, type, 4);
  expect_format_error(b, "unknown ggml type id 4");
  b = good; poke<uint32_t>(b, type, static_cast<uint32_t>(GgmlType::Q4_0));
  expect_format_error(b, "not a multiple of the Q4_0 block size 32");
  b = good; poke<uint64_t>(b, ne0, 1ULL << 40);
  expect_format_error(b, "past the end");
  b = good; poke<uint64_t>(b, ne0, 1ULL << 62);  // 2^62 x 4 bytes overflows u64
  expect_format_error(b, "absurdly large");
  b = good; poke<uint64_t>(b, ne0, ~0ULL);
  expect_format_error(b, "absurd dims");
  // Duplicate tensor name: rename "b" to "a".
  b = good; b[at + 8] = 'a';
  expect_format_error(b, "duplicate tensor name 'a'");
}

// Random byte corruption: every mutant either parses (and then dequantises without reading out of bounds) or
// throws FormatError. Anything else (a crash, bad_alloc, another exception type) fails the test.
TEST(Gguf, RandomCorruptionNeverCrashes) {
  const std::string good = file_read(data_path("meta.gguf"));
  std::mt19937 rng(1234);
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = good;
    int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) {
      size_t at = rng() % b.size();
      b[at] = (rng() % 3 == 0) ? static_cast<char>(0xff) : static_cast<char>(rng());
    }
    std::string p = write_temp(b);
    try {
      GgufFile f(p);
      for (const auto& t : f.tensors())
        if (gguf_ggml_can_dequantize(t.type) && t.n_elements < (1 << 20)) f.dequantize(t);
      ++parsed;
    } catch (const FormatError&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);
  EXPECT_GT(parsed, 100);
}

}  // namespace
}  // namespace patchllm
