// safetensors reader/writer against hand-built files: valid, truncated, bad header, bad offsets, overlap.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace patchllm;

namespace {

// Builds a safetensors file byte by byte from a header string and a data blob (independent of our writer).
std::string write_raw(const std::string& dir, const std::string& header, const std::string& data,
                      int64_t hlen_override = -1) {
  std::string path = dir + "/t.safetensors";
  std::ofstream f(path, std::ios::binary);
  uint64_t n = hlen_override >= 0 ? static_cast<uint64_t>(hlen_override) : header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << data;
  return path;
}

std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(v.begin()), v.size() * 4);
}

void expect_format_error(const std::string& path, const std::string& needle) {
  try {
    SafetensorsFile f(path);
    FAIL() << "expected FormatError containing '" << needle << "'";
  } catch (const FormatError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(needle), std::string::npos) << m;
    EXPECT_NE(m.find(path), std::string::npos) << "error must name the file: " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "one-line error: " << m;
  }
}

}  // namespace

TEST(Safetensors, ReadsHandBuiltFile) {
  auto dir = test::temp_dir("st");
  std::string h =
      R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},"__metadata__":{"format":"pt"}})";
  // bf16 1.0 = 0x3F80, -2.0 = 0xC000 (little endian)
  std::string data = floats({1.f, 2.f, 3.f, -4.5f}) + std::string("\x80\x3F\x00\xC0", 4);
  SafetensorsFile f(write_raw(dir, h, data));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  auto a = f.load("a");
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_FLOAT_EQ(a[1][1].item<float>(), -4.5f);
  auto b = f.load("b");
  EXPECT_EQ(b.scalar_type(), torch::kBFloat16);
  EXPECT_FLOAT_EQ(b[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(b[1].item<float>(), -2.0f);
}

TEST(Safetensors, WriterRoundTripAndLayout) {
  auto dir = test::temp_dir("st");
  std::map<std::string, torch::Tensor> t = {{"x", torch::arange(6, torch::kFloat32).view({2, 3})},
                                            {"y", torch::tensor({1, 2, 3}, torch::kInt64)},
                                            {"z", torch::ones({4}, torch::kFloat16)}};
  safetensors_write(dir + "/w.safetensors", t, {{"k", "v"}});
  SafetensorsFile f(dir + "/w.safetensors");
  EXPECT_TRUE(torch::equal(f.load("x"), t["x"]));
  EXPECT_TRUE(torch::equal(f.load("y"), t["y"]));
  EXPECT_TRUE(torch::equal(f.load("z"), t["z"]));
  EXPECT_EQ(f.metadata().at("k"), "v");
  // Data section 8-byte aligned and the tensors packed in name order, as the reference writer does.
  std::string raw = file_read(dir + "/w.safetensors");
  uint64_t hlen;
  std::memcpy(&hlen, raw.data(), 8);
  EXPECT_EQ(hlen % 8, 0u);
  EXPECT_EQ(f.entry("x").begin, 0u);
  EXPECT_EQ(f.entry("y").begin, 24u);
  EXPECT_EQ(f.entry("z").begin, 48u);
  EXPECT_EQ(raw.size(), 8 + hlen + 56);
}

TEST(Safetensors, Truncated) {
  auto dir = test::temp_dir("st");
  std::string h = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  expect_format_error(write_raw(dir, h, floats({1.f, 2.f})), "truncated");
  std::ofstream(dir + "/tiny.safetensors") << "abc";
  expect_format_error(dir + "/tiny.safetensors", "truncated");
}

TEST(Safetensors, BadHeader) {
  auto dir = test::temp_dir("st");
  expect_format_error(write_raw(dir, "{not json", ""), "malformed");
  expect_format_error(write_raw(dir, "{}", "", 1000), "exceeds the file size");
  expect_format_error(write_raw(dir, R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", "x"),
                      "unsupported dtype");
  expect_format_error(write_raw(dir, R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "xxxx"), "lacks");
  expect_format_error(write_raw(dir, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "xxxx"),
                      "negative");
}

TEST(Safetensors, BadOffsets) {
  auto dir = test::temp_dir("st");
  expect_format_error(write_raw(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", floats({1, 2})),
                      "reversed");
  expect_format_error(write_raw(dir, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", floats({1, 2})),
                      "shape x dtype");
  expect_format_error(
      write_raw(dir,
                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                floats({1, 2, 3})),
      "overlap");
}

TEST(Safetensors, ShardedCheckpoint) {
  auto dir = test::temp_dir("ckpt");
  safetensors_write(dir + "/model-00001-of-00002.safetensors", {{"a", torch::ones({2})}});
  safetensors_write(dir + "/model-00002-of-00002.safetensors", {{"b", torch::zeros({3})}});
  file_write_atomic(dir + "/model.safetensors.index.json",
                    R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  Checkpoint c(dir);
  EXPECT_EQ(c.load("b").numel(), 3);
  EXPECT_EQ(c.files().size(), 2u);
  EXPECT_THROW(c.load("nope"), FormatError);
  file_write_atomic(dir + "/model.safetensors.index.json",
                    R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  EXPECT_THROW(Checkpoint{dir}, FormatError);
  EXPECT_THROW(Checkpoint{test::temp_dir("empty")}, FormatError);
}
