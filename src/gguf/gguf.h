// GGUF v2/v3 (ggml's single-file model format): reader, dequantisation to float32, and a writer for F32/F16/BF16.
//
// Layout (little-endian): "GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv x {string key, u32 type, value} |
// n_tensors x {string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset} | pad to general.alignment (32) |
// tensor data, each tensor at data_start + offset (a multiple of the alignment). ne[0] is the fastest-varying dim,
// so the row-major (HF / torch) shape is ne reversed. Strings are u64 length + UTF-8 bytes, no terminator.
//
// The reader maps the file and validates every count, length, offset and size against the file size before using
// it; a corrupt file throws a one-line FormatError naming the file, never reads out of bounds, and never allocates
// more than the file could describe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/file.h"

namespace patchllm {

// Metadata value types (gguf.md "gguf_metadata_value_type").
enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

// Tensor types (ggml.h "enum ggml_type"); ids 4, 5 and 31-33 were removed upstream and are unknown here.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12,
  Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34,
  TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};
bool gguf_ggml_type_known(uint32_t id);
const char* gguf_ggml_type_name(GgmlType t);  // "Q4_K"; "type<N>" for unknown ids
int64_t gguf_ggml_block_size(GgmlType t);     // elements per block (1 for F32); 0 for unknown
int64_t gguf_ggml_type_size(GgmlType t);      // bytes per block; 0 for unknown
bool gguf_ggml_can_dequantize(GgmlType t);

// One metadata value. Scalars live in `i` (integers and bool; UINT64 bit-cast), `f` (FLOAT32/FLOAT64) or `s`.
// Arrays keep their elements typed and compact (a 262k-token vocabulary is one vector<string>): integer and bool
// elements in `ints`, float elements in `floats`, strings in `strings`, nested arrays in `arrays`.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  GgufType elem_type = GgufType::UINT8;  // arrays only
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<GgufValue> arrays;

  size_t size() const;  // array length (0 for scalars)
  bool is_integer() const;  // an integer or bool scalar
  bool is_float() const;
  std::string to_string() const;  // short human-readable rendering (arrays abbreviated), for inspect/debug

  static GgufValue make_int(GgufType t, int64_t v);  // t: any integer type or BOOL
  static GgufValue make_uint64(uint64_t v);
  static GgufValue make_float(GgufType t, double v);  // t: FLOAT32 or FLOAT64
  static GgufValue make_bool(bool v);
  static GgufValue make_string(std::string v);
  static GgufValue make_int_array(GgufType elem, std::vector<int64_t> v);
  static GgufValue make_float_array(GgufType elem, std::vector<double> v);
  static GgufValue make_string_array(std::vector<std::string> v);
  static GgufValue make_nested_array(std::vector<GgufValue> v);  // each element an ARRAY value
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] fastest
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t n_bytes = 0;
  int64_t n_elements = 0;
  std::vector<int64_t> shape() const;  // row-major shape: ne reversed
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);  // throws FormatError
  const std::string& path() const { return _map->path(); }
  uint32_t version() const { return _version; }
  uint64_t alignment() const { return _alignment; }
  uint64_t data_offset() const { return _data_offset; }  // absolute file offset of the data section

  // Metadata in file order, and by key.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return _kv; }
  bool has(const std::string& key) const { return _kv_index.count(key) != 0; }
  const GgufValue& get(const std::string& key) const;  // FormatError naming the missing key
  // Typed getters: FormatError when the key is missing (without default) or has an incompatible type.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t dflt) const;
  double get_float(const std::string& key) const;  // accepts integer values too
  double get_float(const std::string& key, double dflt) const;
  bool get_bool(const std::string& key, bool dflt) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& dflt) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;  // array of STRING
  const std::vector<int64_t>& get_ints(const std::string& key) const;         // array of integers/bools
  const std::vector<double>& get_floats(const std::string& key) const;        // array of floats

  const std::vector<GgufTensor>& tensors() const { return _tensors; }
  const GgufTensor* find_tensor(const std::string& name) const;  // nullptr if absent
  const GgufTensor& tensor(const std::string& name) const;       // FormatError if absent
  const uint8_t* tensor_data(const GgufTensor& t) const { return _map->data() + _data_offset + t.offset; }
  // All elements as float32, in ggml order (row-major over `shape()`). InvalidArgument for types without a
  // dequantiser ("unsupported tensor type IQ2_XS in FILE (tensor 'x')").
  std::vector<float> dequantize(const GgufTensor& t) const;
  void dequantize_into(const GgufTensor& t, float* out) const;  // out holds t.n_elements floats

 private:
  std::shared_ptr<MappedFile> _map;
  uint32_t _version = 0;
  uint64_t _alignment = 32;
  uint64_t _data_offset = 0;
  std::vector<std::pair<std::string, GgufValue>> _kv;
  std::map<std::string, size_t> _kv_index;
  std::vector<GgufTensor> _tensors;
  std::map<std::string, size_t> _tensor_index;
};

// Dequantises n elements (a multiple of the type's block size) from `src` into `dst`. InvalidArgument when the type
// has no dequantiser here. Supported: F32 F16 BF16 F64 I8 I16 I32 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K.
void gguf_dequantize(GgmlType type, const void* src, float* dst, int64_t n);

// Scalar conversions, bit-exact with ggml (round-to-nearest-even; NaN kept quiet).
float gguf_fp16_to_fp32(uint16_t h);
uint16_t gguf_fp32_to_fp16(float f);
float gguf_bf16_to_fp32(uint16_t h);
uint16_t gguf_fp32_to_bf16(float f);

// Writer: builds a GGUF v3 file with the same byte layout as gguf-py's GGUFWriter (KVs and tensors in insertion
// order, each tensor padded to the alignment). Tensor data is referenced, not copied: it must stay valid until
// write() returns.
class GgufWriter {
 public:
  GgufWriter() = default;
  // Sets the data alignment (power of two) and records it as the u32 KV general.alignment, as gguf-py does.
  void set_alignment(uint32_t alignment);
  void add_kv(const std::string& key, GgufValue value);  // an existing key is overwritten in place
  // ne in ggml order (ne[0] fastest). n_bytes must equal the size the type implies. InvalidArgument otherwise.
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne, const void* data,
                  size_t n_bytes);
  void write(const std::string& path) const;  // atomically (temp file + rename)
  std::string serialize() const;               // the whole file in memory (tests, small files)

 private:
  struct Pending {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    const void* data;
    size_t n_bytes;
  };
  std::string header_bytes() const;  // header, KVs and tensor infos, padded to the alignment
  uint32_t _alignment = 32;
  std::vector<std::pair<std::string, GgufValue>> _kv;
  std::vector<Pending> _tensors;
};

}  // namespace patchllm
