#include "gguf/gguf.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include "core/error.h"

namespace patchllm {

namespace {

constexpr uint32_t GGUF_MAGIC = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int GGUF_MAX_DIMS = 4;             // GGML_MAX_DIMS
constexpr int GGUF_MAX_NESTING = 8;          // arrays of arrays deeper than this are surely corrupt
constexpr uint64_t GGUF_MAX_KEY_BYTES = 65535;  // gguf.md: keys are at most 2^16-1 bytes

struct TypeTraits {
  const char* name;
  int64_t block;
  int64_t size;
  bool dequant;
};

// Block sizes and bytes per block: ggml.c type_traits / gguf-py GGML_QUANT_SIZES.
TypeTraits type_traits(uint32_t id) {
  switch (id) {
    case 0: return {"F32", 1, 4, true};
    case 1: return {"F16", 1, 2, true};
    case 2: return {"Q4_0", 32, 18, true};
    case 3: return {"Q4_1", 32, 20, true};
    case 6: return {"Q5_0", 32, 22, true};
    case 7: return {"Q5_1", 32, 24, true};
    case 8: return {"Q8_0", 32, 34, true};
    case 9: return {"Q8_1", 32, 40, false};
    case 10: return {"Q2_K", 256, 84, true};
    case 11: return {"Q3_K", 256, 110, true};
    case 12: return {"Q4_K", 256, 144, true};
    case 13: return {"Q5_K", 256, 176, true};
    case 14: return {"Q6_K", 256, 210, true};
    case 15: return {"Q8_K", 256, 292, true};
    case 16: return {"IQ2_XXS", 256, 66, false};
    case 17: return {"IQ2_XS", 256, 74, false};
    case 18: return {"IQ3_XXS", 256, 98, false};
    case 19: return {"IQ1_S", 256, 50, false};
    case 20: return {"IQ4_NL", 32, 18, false};
    case 21: return {"IQ3_S", 256, 110, false};
    case 22: return {"IQ2_S", 256, 82, false};
    case 23: return {"IQ4_XS", 256, 136, false};
    case 24: return {"I8", 1, 1, true};
    case 25: return {"I16", 1, 2, true};
    case 26: return {"I32", 1, 4, true};
    case 27: return {"I64", 1, 8, false};
    case 28: return {"F64", 1, 8, true};
    case 29: return {"IQ1_M", 256, 56, false};
    case 30: return {"BF16", 1, 2, true};
    case 34: return {"TQ1_0", 256, 54, false};
    case 35: return {"TQ2_0", 256, 66, false};
    case 39: return {"MXFP4", 32, 17, false};
    case 40: return {"NVFP4", 64, 36, false};
    case 41: return {"Q1_0", 128, 18, false};
    default: return {nullptr, 0, 0, false};
  }
}

// Bounds-checked little-endian reader over the mapped file. Every read names what it was reading when it fails.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& path) : _data(data), _size(size), _path(path) {}
  uint64_t pos() const { return _pos; }
  uint64_t remaining() const { return _size - _pos; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      throw FormatError(str(_path, ": truncated GGUF file: ", what, " needs ", n, " bytes at offset ", _pos,
                            " but the file has ", _size, " bytes"));
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, _data + _pos, sizeof(T));
    _pos += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what, uint64_t max_len = std::numeric_limits<uint64_t>::max()) {
    uint64_t n = read<uint64_t>(what + " length");
    if (n > max_len) throw FormatError(str(_path, ": ", what, " length ", n, " exceeds the limit of ", max_len));
    need(n, what);
    std::string s(reinterpret_cast<const char*>(_data + _pos), n);
    _pos += n;
    return s;
  }

 private:
  const uint8_t* _data;
  uint64_t _size;
  const std::string& _path;
  uint64_t _pos = 0;
};

int64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    case GgufType::STRING: return 8;   // length prefix
    case GgufType::ARRAY: return 12;   // element type + count
  }
  return 1;
}

bool type_valid(uint32_t t) { return t <= 12; }

bool is_int_type(GgufType t) {
  return t == GgufType::UINT8 || t == GgufType::INT8 || t == GgufType::UINT16 || t == GgufType::INT16 ||
         t == GgufType::UINT32 || t == GgufType::INT32 || t == GgufType::UINT64 || t == GgufType::INT64 ||
         t == GgufType::BOOL;
}
bool is_float_type(GgufType t) { return t == GgufType::FLOAT32 || t == GgufType::FLOAT64; }

// Reads one scalar of type t into (i, f, s).
void read_scalar(Cursor& c, GgufType t, const std::string& what, int64_t& i, double& f, std::string& s,
                 const std::string& path) {
  switch (t) {
    case GgufType::UINT8: i = c.read<uint8_t>(what); break;
    case GgufType::INT8: i = c.read<int8_t>(what); break;
    case GgufType::UINT16: i = c.read<uint16_t>(what); break;
    case GgufType::INT16: i = c.read<int16_t>(what); break;
    case GgufType::UINT32: i = c.read<uint32_t>(what); break;
    case GgufType::INT32: i = c.read<int32_t>(what); break;
    case GgufType::UINT64: i = static_cast<int64_t>(c.read<uint64_t>(what)); break;
    case GgufType::INT64: i = c.read<int64_t>(what); break;
    case GgufType::FLOAT32: f = c.read<float>(what); break;
    case GgufType::FLOAT64: f = c.read<double>(what); break;
    case GgufType::BOOL: {
      uint8_t b = c.read<uint8_t>(what);
      if (b > 1) throw FormatError(str(path, ": ", what, " is a bool with invalid byte ", int(b)));
      i = b;
      break;
    }
    case GgufType::STRING: s = c.read_string(what); break;
    case GgufType::ARRAY: break;  // handled by the caller
  }
}

void read_array(Cursor& c, GgufValue& v, const std::string& what, const std::string& path, int depth);

void read_value(Cursor& c, GgufType t, GgufValue& v, const std::string& what, const std::string& path, int depth) {
  v.type = t;
  if (t == GgufType::ARRAY) {
    read_array(c, v, what, path, depth + 1);
  } else {
    read_scalar(c, t, what, v.i, v.f, v.s, path);
  }
}

void read_array(Cursor& c, GgufValue& v, const std::string& what, const std::string& path, int depth) {
  if (depth > GGUF_MAX_NESTING)
    throw FormatError(str(path, ": ", what, " nests arrays deeper than ", GGUF_MAX_NESTING, " levels"));
  uint32_t et = c.read<uint32_t>(what + " element type");
  if (!type_valid(et)) throw FormatError(str(path, ": ", what, " has invalid array element type ", et));
  uint64_t n = c.read<uint64_t>(what + " element count");
  GgufType elem = static_cast<GgufType>(et);
  v.elem_type = elem;
  // Every element takes at least min_value_bytes, so a count the file cannot hold is rejected before allocating.
  uint64_t min_bytes = static_cast<uint64_t>(min_value_bytes(elem));
  if (n > c.remaining() / min_bytes)
    throw FormatError(str(path, ": ", what, " claims ", n, " elements of type ", gguf_type_name(elem),
                          ", more than the remaining ", c.remaining(), " bytes can hold"));
  if (elem == GgufType::STRING) {
    v.strings.resize(n);
    for (uint64_t k = 0; k < n; ++k) v.strings[k] = c.read_string(what + " element");
  } else if (elem == GgufType::ARRAY) {
    v.arrays.resize(n);
    for (uint64_t k = 0; k < n; ++k) {
      v.arrays[k].type = GgufType::ARRAY;
      read_array(c, v.arrays[k], what + " element", path, depth + 1);
    }
  } else if (is_float_type(elem)) {
    v.floats.resize(n);
    int64_t i;
    std::string s;
    for (uint64_t k = 0; k < n; ++k) read_scalar(c, elem, what, i, v.floats[k], s, path);
  } else {
    v.ints.resize(n);
    double f;
    std::string s;
    for (uint64_t k = 0; k < n; ++k) read_scalar(c, elem, what, v.ints[k], f, s, path);
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Type helpers

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"UINT8", "INT8",  "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  uint32_t k = static_cast<uint32_t>(t);
  return k <= 12 ? names[k] : "INVALID";
}

bool gguf_ggml_type_known(uint32_t id) { return type_traits(id).name != nullptr; }

const char* gguf_ggml_type_name(GgmlType t) {
  const char* n = type_traits(static_cast<uint32_t>(t)).name;
  if (n) return n;
  static thread_local std::string buf;
  buf = str("type", static_cast<uint32_t>(t));
  return buf.c_str();
}
int64_t gguf_ggml_block_size(GgmlType t) { return type_traits(static_cast<uint32_t>(t)).block; }
int64_t gguf_ggml_type_size(GgmlType t) { return type_traits(static_cast<uint32_t>(t)).size; }
bool gguf_ggml_can_dequantize(GgmlType t) { return type_traits(static_cast<uint32_t>(t)).dequant; }

// ---------------------------------------------------------------------------------------------------------------
// GgufValue

size_t GgufValue::size() const {
  if (type != GgufType::ARRAY) return 0;
  if (elem_type == GgufType::STRING) return strings.size();
  if (elem_type == GgufType::ARRAY) return arrays.size();
  if (is_float_type(elem_type)) return floats.size();
  return ints.size();
}
bool GgufValue::is_integer() const { return is_int_type(type); }
bool GgufValue::is_float() const { return is_float_type(type); }

std::string GgufValue::to_string() const {
  switch (type) {
    case GgufType::STRING: return s.size() > 60 ? "\"" + s.substr(0, 57) + "...\"" : "\"" + s + "\"";
    case GgufType::FLOAT32: case GgufType::FLOAT64: return str(f);
    case GgufType::BOOL: return i ? "true" : "false";
    case GgufType::UINT64: return str(static_cast<uint64_t>(i));
    case GgufType::ARRAY: {
      std::string out = str("[", gguf_type_name(elem_type), " x ", size(), "]");
      return out;
    }
    default: return str(i);
  }
}

GgufValue GgufValue::make_int(GgufType t, int64_t v) {
  PATCHLLM_CHECK(is_int_type(t), InvalidArgument, "GgufValue::make_int: ", gguf_type_name(t), " is not an integer type");
  GgufValue r;
  r.type = t;
  r.i = v;
  return r;
}
GgufValue GgufValue::make_uint64(uint64_t v) { return make_int(GgufType::UINT64, static_cast<int64_t>(v)); }
GgufValue GgufValue::make_float(GgufType t, double v) {
  PATCHLLM_CHECK(is_float_type(t), InvalidArgument, "GgufValue::make_float: ", gguf_type_name(t), " is not a float type");
  GgufValue r;
  r.type = t;
  r.f = v;
  return r;
}
GgufValue GgufValue::make_bool(bool v) { return make_int(GgufType::BOOL, v ? 1 : 0); }
GgufValue GgufValue::make_string(std::string v) {
  GgufValue r;
  r.type = GgufType::STRING;
  r.s = std::move(v);
  return r;
}
GgufValue GgufValue::make_int_array(GgufType elem, std::vector<int64_t> v) {
  PATCHLLM_CHECK(is_int_type(elem), InvalidArgument, "GgufValue::make_int_array: ", gguf_type_name(elem),
                 " is not an integer type");
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = elem;
  r.ints = std::move(v);
  return r;
}
GgufValue GgufValue::make_float_array(GgufType elem, std::vector<double> v) {
  PATCHLLM_CHECK(is_float_type(elem), InvalidArgument, "GgufValue::make_float_array: ", gguf_type_name(elem),
                 " is not a float type");
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = elem;
  r.floats = std::move(v);
  return r;
}
GgufValue GgufValue::make_string_array(std::vector<std::string> v) {
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = GgufType::STRING;
  r.strings = std::move(v);
  return r;
}
GgufValue GgufValue::make_nested_array(std::vector<GgufValue> v) {
  for (const auto& e : v)
    PATCHLLM_CHECK(e.type == GgufType::ARRAY, InvalidArgument, "GgufValue::make_nested_array: element is ",
                   gguf_type_name(e.type), ", not ARRAY");
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = GgufType::ARRAY;
  r.arrays = std::move(v);
  return r;
}

std::vector<int64_t> GgufTensor::shape() const { return std::vector<int64_t>(ne.rbegin(), ne.rend()); }

// ---------------------------------------------------------------------------------------------------------------
// Reader

GgufFile::GgufFile(const std::string& path) : _map(std::make_shared<MappedFile>(path)) {
  const uint64_t size = _map->size();
  Cursor c(_map->data(), size, path);

  uint32_t magic = c.read<uint32_t>("magic");
  if (magic != GGUF_MAGIC) {
    char m[4];
    std::memcpy(m, &magic, 4);
    std::string shown;
    for (char ch : m) shown += (ch >= 32 && ch < 127) ? ch : '?';
    throw FormatError(str(path, ": not a GGUF file (magic \"", shown, "\", expected \"GGUF\")"));
  }
  _version = c.read<uint32_t>("version");
  if (_version == 0x02000000u || _version == 0x03000000u)
    throw FormatError(str(path, ": big-endian GGUF files are not supported"));
  if (_version == 1) throw FormatError(str(path, ": GGUF version 1 is not supported (only versions 2 and 3)"));
  if (_version != 2 && _version != 3)
    throw FormatError(str(path, ": unsupported GGUF version ", _version, " (only versions 2 and 3)"));

  uint64_t n_tensors = c.read<uint64_t>("tensor count");
  uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Minimum bytes per entry: KV = key length (8) + type (4) + 1; tensor info = name length (8) + n_dims (4) +
  // one dim (8) + type (4) + offset (8).
  if (n_kv > c.remaining() / 13)
    throw FormatError(str(path, ": header claims ", n_kv, " metadata entries, more than the file (", size,
                          " bytes) can hold"));
  if (n_tensors > c.remaining() / 32)
    throw FormatError(str(path, ": header claims ", n_tensors, " tensors, more than the file (", size,
                          " bytes) can hold"));

  _kv.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.read_string(str("metadata key #", k), GGUF_MAX_KEY_BYTES);
    if (_kv_index.count(key)) throw FormatError(str(path, ": duplicate metadata key '", key, "'"));
    uint32_t t = c.read<uint32_t>(str("type of metadata '", key, "'"));
    if (!type_valid(t)) throw FormatError(str(path, ": metadata '", key, "' has invalid value type ", t));
    GgufValue v;
    read_value(c, static_cast<GgufType>(t), v, str("metadata '", key, "'"), path, 0);
    _kv_index[key] = _kv.size();
    _kv.emplace_back(std::move(key), std::move(v));
  }

  if (has("general.alignment")) {
    const GgufValue& a = get("general.alignment");
    if (!a.is_integer() || a.type == GgufType::BOOL)
      throw FormatError(str(path, ": general.alignment has type ", gguf_type_name(a.type), ", expected UINT32"));
    uint64_t al = static_cast<uint64_t>(a.i);
    if (al == 0 || (al & (al - 1)) != 0 || al > (1u << 30))
      throw FormatError(str(path, ": general.alignment ", a.i, " is not a power of two in [1, 2^30]"));
    _alignment = al;
  }

  _tensors.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    t.name = c.read_string(str("name of tensor #", k), GGUF_MAX_KEY_BYTES);
    if (_tensor_index.count(t.name)) throw FormatError(str(path, ": duplicate tensor name '", t.name, "'"));
    const std::string tn = str("tensor '", t.name, "'");
    uint32_t n_dims = c.read<uint32_t>(tn + " n_dims");
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
      throw FormatError(str(path, ": ", tn, " has ", n_dims, " dims (expected 1 to ", GGUF_MAX_DIMS, ")"));
    t.ne.resize(n_dims);
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = c.read<uint64_t>(tn + " dims");
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (ne > 0 && static_cast<uint64_t>(n_el) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne))
        throw FormatError(str(path, ": ", tn, " has absurd dims (element count overflows)"));
      t.ne[d] = static_cast<int64_t>(ne);
      n_el *= static_cast<int64_t>(ne);
    }
    t.n_elements = n_el;
    uint32_t ty = c.read<uint32_t>(tn + " type");
    if (!gguf_ggml_type_known(ty)) throw FormatError(str(path, ": ", tn, " has unknown ggml type id ", ty));
    t.type = static_cast<GgmlType>(ty);
    const int64_t block = gguf_ggml_block_size(t.type), tsize = gguf_ggml_type_size(t.type);
    if (t.ne[0] % block != 0)
      throw FormatError(str(path, ": ", tn, " has ne[0] = ", t.ne[0], ", not a multiple of the ",
                            gguf_ggml_type_name(t.type), " block size ", block));
    // n_el <= 2^63 and tsize/block <= 8, so bytes fit once computed as blocks * tsize in unsigned arithmetic.
    uint64_t blocks = static_cast<uint64_t>(n_el / block);
    if (blocks > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(tsize))
      throw FormatError(str(path, ": ", tn, " is absurdly large"));
    t.n_bytes = blocks * static_cast<uint64_t>(tsize);
    t.offset = c.read<uint64_t>(tn + " offset");
    if (t.offset % _alignment != 0)
      throw FormatError(str(path, ": ", tn, " data offset ", t.offset, " is not a multiple of the alignment ",
                            _alignment));
    _tensor_index[t.name] = _tensors.size();
    _tensors.push_back(std::move(t));
  }

  _data_offset = align_up(c.pos(), _alignment);
  const uint64_t data_size = _data_offset <= size ? size - _data_offset : 0;
  if (!_tensors.empty() && _data_offset > size)
    throw FormatError(str(path, ": truncated GGUF file: the data section would start at ", _data_offset,
                          " but the file has ", size, " bytes"));
  for (const auto& t : _tensors) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      throw FormatError(str(path, ": tensor '", t.name, "' data [", t.offset, ", +", t.n_bytes,
                            ") lies past the end of the data section (", data_size, " bytes; file truncated?)"));
  }
  // Overlapping tensors would alias each other's data: always a writer bug or corruption.
  std::vector<const GgufTensor*> by_offset;
  for (const auto& t : _tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensor* a = by_offset[k - 1];
    const GgufTensor* b = by_offset[k];
    if (a->n_bytes > 0 && b->n_bytes > 0 && a->offset + a->n_bytes > b->offset)
      throw FormatError(str(path, ": tensors '", a->name, "' and '", b->name, "' overlap in the data section"));
  }
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = _kv_index.find(key);
  if (it == _kv_index.end()) throw FormatError(str(path(), ": metadata key '", key, "' is missing"));
  return _kv[it->second].second;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = get(key);
  if (!v.is_integer())
    throw FormatError(str(path(), ": metadata '", key, "' is ", gguf_type_name(v.type), ", expected an integer"));
  if (v.type == GgufType::UINT64 && v.i < 0)
    throw FormatError(str(path(), ": metadata '", key, "' = ", static_cast<uint64_t>(v.i), " is too large"));
  return v.i;
}
int64_t GgufFile::get_int(const std::string& key, int64_t dflt) const { return has(key) ? get_int(key) : dflt; }

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.is_float()) return v.f;
  if (v.is_integer() && v.type != GgufType::BOOL)
    return v.type == GgufType::UINT64 ? static_cast<double>(static_cast<uint64_t>(v.i)) : static_cast<double>(v.i);
  throw FormatError(str(path(), ": metadata '", key, "' is ", gguf_type_name(v.type), ", expected a number"));
}
double GgufFile::get_float(const std::string& key, double dflt) const { return has(key) ? get_float(key) : dflt; }

bool GgufFile::get_bool(const std::string& key, bool dflt) const {
  if (!has(key)) return dflt;
  const GgufValue& v = get(key);
  if (v.type != GgufType::BOOL)
    throw FormatError(str(path(), ": metadata '", key, "' is ", gguf_type_name(v.type), ", expected BOOL"));
  return v.i != 0;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::STRING)
    throw FormatError(str(path(), ": metadata '", key, "' is ", gguf_type_name(v.type), ", expected STRING"));
  return v.s;
}
std::string GgufFile::get_string(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_string(key) : dflt;
}

const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::ARRAY || v.elem_type != GgufType::STRING)
    throw FormatError(str(path(), ": metadata '", key, "' is not an array of strings"));
  return v.strings;
}
const std::vector<int64_t>& GgufFile::get_ints(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::ARRAY || !is_int_type(v.elem_type))
    throw FormatError(str(path(), ": metadata '", key, "' is not an array of integers"));
  return v.ints;
}
const std::vector<double>& GgufFile::get_floats(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::ARRAY || !is_float_type(v.elem_type))
    throw FormatError(str(path(), ": metadata '", key, "' is not an array of floats"));
  return v.floats;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = _tensor_index.find(name);
  return it == _tensor_index.end() ? nullptr : &_tensors[it->second];
}
const GgufTensor& GgufFile::tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) throw FormatError(str(path(), ": tensor '", name, "' is missing"));
  return *t;
}

void GgufFile::dequantize_into(const GgufTensor& t, float* out) const {
  if (!gguf_ggml_can_dequantize(t.type))
    throw InvalidArgument(str("unsupported tensor type ", gguf_ggml_type_name(t.type), " in ", path(), " (tensor '",
                              t.name, "')"));
  gguf_dequantize(t.type, tensor_data(t), out, t.n_elements);
}

std::vector<float> GgufFile::dequantize(const GgufTensor& t) const {
  if (!gguf_ggml_can_dequantize(t.type))
    throw InvalidArgument(str("unsupported tensor type ", gguf_ggml_type_name(t.type), " in ", path(), " (tensor '",
                              t.name, "')"));
  std::vector<float> out(static_cast<size_t>(t.n_elements));
  gguf_dequantize(t.type, tensor_data(t), out.data(), t.n_elements);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

namespace {

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

void put_scalar(std::string& out, GgufType t, int64_t i, double f, const std::string& s) {
  switch (t) {
    case GgufType::UINT8: put<uint8_t>(out, static_cast<uint8_t>(i)); break;
    case GgufType::INT8: put<int8_t>(out, static_cast<int8_t>(i)); break;
    case GgufType::UINT16: put<uint16_t>(out, static_cast<uint16_t>(i)); break;
    case GgufType::INT16: put<int16_t>(out, static_cast<int16_t>(i)); break;
    case GgufType::UINT32: put<uint32_t>(out, static_cast<uint32_t>(i)); break;
    case GgufType::INT32: put<int32_t>(out, static_cast<int32_t>(i)); break;
    case GgufType::UINT64: put<uint64_t>(out, static_cast<uint64_t>(i)); break;
    case GgufType::INT64: put<int64_t>(out, i); break;
    case GgufType::FLOAT32: put<float>(out, static_cast<float>(f)); break;
    case GgufType::FLOAT64: put<double>(out, f); break;
    case GgufType::BOOL: put<uint8_t>(out, i ? 1 : 0); break;
    case GgufType::STRING: put_string(out, s); break;
    case GgufType::ARRAY: break;
  }
}

// Array body: element type, count, elements (nested arrays repeat the body without a value-type prefix).
void put_array_body(std::string& out, const GgufValue& v) {
  put<uint32_t>(out, static_cast<uint32_t>(v.elem_type));
  put<uint64_t>(out, v.size());
  if (v.elem_type == GgufType::STRING) {
    for (const auto& s : v.strings) put_string(out, s);
  } else if (v.elem_type == GgufType::ARRAY) {
    for (const auto& a : v.arrays) put_array_body(out, a);
  } else if (is_float_type(v.elem_type)) {
    for (double f : v.floats) put_scalar(out, v.elem_type, 0, f, "");
  } else {
    for (int64_t i : v.ints) put_scalar(out, v.elem_type, i, 0.0, "");
  }
}

}  // namespace

void GgufWriter::set_alignment(uint32_t alignment) {
  PATCHLLM_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0, InvalidArgument,
                 "GgufWriter: alignment ", alignment, " is not a power of two");
  _alignment = alignment;
  add_kv("general.alignment", GgufValue::make_int(GgufType::UINT32, alignment));
}

void GgufWriter::add_kv(const std::string& key, GgufValue value) {
  for (auto& kv : _kv) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  _kv.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                            const void* data, size_t n_bytes) {
  PATCHLLM_CHECK(gguf_ggml_type_known(static_cast<uint32_t>(type)), InvalidArgument, "GgufWriter: tensor '", name,
                 "' has unknown type");
  PATCHLLM_CHECK(!ne.empty() && ne.size() <= GGUF_MAX_DIMS, InvalidArgument, "GgufWriter: tensor '", name, "' has ",
                 ne.size(), " dims (1 to 4 allowed)");
  for (const auto& p : _tensors)
    PATCHLLM_CHECK(p.name != name, InvalidArgument, "GgufWriter: duplicate tensor name '", name, "'");
  int64_t n_el = 1;
  for (int64_t d : ne) {
    PATCHLLM_CHECK(d >= 0, InvalidArgument, "GgufWriter: tensor '", name, "' has a negative dim");
    n_el *= d;
  }
  const int64_t block = gguf_ggml_block_size(type);
  PATCHLLM_CHECK(ne[0] % block == 0, InvalidArgument, "GgufWriter: tensor '", name, "' ne[0] = ", ne[0],
                 " is not a multiple of the block size ", block);
  const uint64_t want = static_cast<uint64_t>(n_el / block) * static_cast<uint64_t>(gguf_ggml_type_size(type));
  PATCHLLM_CHECK(want == n_bytes, InvalidArgument, "GgufWriter: tensor '", name, "' has ", n_bytes,
                 " bytes, its shape and type need ", want);
  _tensors.push_back({name, type, ne, data, n_bytes});
}

std::string GgufWriter::header_bytes() const {
  std::string out;
  put<uint32_t>(out, GGUF_MAGIC);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, _tensors.size());
  put<uint64_t>(out, _kv.size());
  for (const auto& kv : _kv) {
    put_string(out, kv.first);
    put<uint32_t>(out, static_cast<uint32_t>(kv.second.type));
    if (kv.second.type == GgufType::ARRAY) {
      put_array_body(out, kv.second);
    } else {
      put_scalar(out, kv.second.type, kv.second.i, kv.second.f, kv.second.s);
    }
  }
  uint64_t offset = 0;
  for (const auto& t : _tensors) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put<uint64_t>(out, static_cast<uint64_t>(d));
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    offset += align_up(t.n_bytes, _alignment);
  }
  out.resize(align_up(out.size(), _alignment), '\0');
  return out;
}

std::string GgufWriter::serialize() const {
  std::string out = header_bytes();
  for (const auto& t : _tensors) {
    out.append(static_cast<const char*>(t.data), t.n_bytes);
    out.resize(align_up(out.size(), _alignment), '\0');
  }
  return out;
}

void GgufWriter::write(const std::string& path) const {
  // Streams tensors to a temp file (a model does not fit twice in memory), then renames it into place.
  std::string tmp = str(path, ".tmp.", ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    PATCHLLM_CHECK(f.good(), Error, tmp, ": cannot open for writing (", std::strerror(errno), ")");
    std::string head = header_bytes();
    f.write(head.data(), static_cast<std::streamsize>(head.size()));
    const std::string zeros(_alignment, '\0');
    for (const auto& t : _tensors) {
      f.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.n_bytes));
      uint64_t pad = align_up(t.n_bytes, _alignment) - t.n_bytes;
      f.write(zeros.data(), static_cast<std::streamsize>(pad));
    }
    f.flush();
    if (!f.good()) {
      ::unlink(tmp.c_str());
      throw Error(str(tmp, ": write failed (disk full?)"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error(str(path, ": cannot rename temp file into place (", std::strerror(e), ")"));
  }
}

}  // namespace patchllm
