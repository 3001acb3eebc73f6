#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json.h"

namespace patchllm {
namespace {

struct DtypeInfo {
  const char* name;
  c10::ScalarType type;
  size_t size;
};
const DtypeInfo kDtypes[] = {
    {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"F64", torch::kFloat64, 8}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_find(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

}  // namespace

c10::ScalarType safetensors_dtype_to_torch(const std::string& dtype) {
  const DtypeInfo* d = dtype_find(dtype);
  PATCHLLM_CHECK(d, FormatError, "unsupported safetensors dtype ", dtype);
  return d->type;
}

std::string safetensors_dtype_from_torch(c10::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw InvalidArgument(str("cannot store dtype ", c10::toString(t), " in safetensors"));
}

SafetensorsFile::SafetensorsFile(const std::string& path) : _map(std::make_shared<MappedFile>(path)) {
  const size_t size = _map->size();
  PATCHLLM_CHECK(size >= 8, FormatError, path, ": truncated safetensors file (", size, " bytes, no header length)");
  uint64_t hlen = 0;
  std::memcpy(&hlen, _map->data(), 8);
  PATCHLLM_CHECK(hlen <= size - 8, FormatError, path, ": header length ", hlen, " exceeds the file size ", size);
  PATCHLLM_CHECK(hlen <= (100u << 20), FormatError, path, ": header length ", hlen, " is implausibly large");
  _data_start = 8 + hlen;
  const uint64_t data_size = size - _data_start;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(_map->data()) + 8,
                                   reinterpret_cast<const char*>(_map->data()) + 8 + hlen);
  } catch (const std::exception& e) {
    throw FormatError(str(path, ": malformed safetensors header JSON (", e.what(), ")"));
  }
  PATCHLLM_CHECK(header.is_object(), FormatError, path, ": safetensors header is not a JSON object");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      PATCHLLM_CHECK(it->is_object(), FormatError, path, ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        PATCHLLM_CHECK(m->is_string(), FormatError, path, ": __metadata__ value '", m.key(), "' is not a string");
        _metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const auto& t = *it;
    const std::string& name = it.key();
    PATCHLLM_CHECK(t.is_object() && t.contains("dtype") && t.contains("shape") && t.contains("data_offsets"),
                   FormatError, path, ": tensor '", name, "' lacks dtype/shape/data_offsets");
    PATCHLLM_CHECK(t["dtype"].is_string(), FormatError, path, ": tensor '", name, "' dtype is not a string");
    SafetensorsEntry e;
    e.dtype = t["dtype"].get<std::string>();
    const DtypeInfo* d = dtype_find(e.dtype);
    PATCHLLM_CHECK(d, FormatError, path, ": tensor '", name, "' has unsupported dtype ", e.dtype);
    PATCHLLM_CHECK(t["shape"].is_array(), FormatError, path, ": tensor '", name, "' shape is not an array");
    uint64_t numel = 1;
    for (const auto& s : t["shape"]) {
      PATCHLLM_CHECK(s.is_number_unsigned() || (s.is_number_integer() && s.get<int64_t>() >= 0), FormatError, path,
                     ": tensor '", name, "' has a negative or non-integer dimension");
      uint64_t v = s.get<uint64_t>();
      PATCHLLM_CHECK(v == 0 || numel <= (uint64_t(1) << 62) / v, FormatError, path, ": tensor '", name,
                     "' shape overflows");
      numel *= v;
      e.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = t["data_offsets"];
    PATCHLLM_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                   FormatError, path, ": tensor '", name, "' data_offsets must be two non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    PATCHLLM_CHECK(e.begin <= e.end, FormatError, path, ": tensor '", name, "' data_offsets are reversed");
    PATCHLLM_CHECK(e.end <= data_size, FormatError, path, ": tensor '", name, "' ends at byte ", e.end,
                   " past the data section (", data_size, " bytes): file truncated?");
    PATCHLLM_CHECK(e.end - e.begin == numel * d->size, FormatError, path, ": tensor '", name, "' has ",
                   e.end - e.begin, " bytes but shape x dtype needs ", numel * d->size);
    ranges.emplace_back(e.begin, e.end);
    _entries.emplace(name, std::move(e));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    PATCHLLM_CHECK(ranges[i].first >= ranges[i - 1].second, FormatError, path,
                   ": tensor data ranges overlap at byte ", ranges[i].first);
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = _entries.find(name);
  PATCHLLM_CHECK(it != _entries.end(), FormatError, path(), ": no tensor named '", name, "'");
  return it->second;
}

const uint8_t* SafetensorsFile::raw(const std::string& name) const {
  return _map->data() + _data_start + entry(name).begin;
}

torch::Tensor SafetensorsFile::load(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  auto t = torch::empty(e.shape, torch::TensorOptions().dtype(safetensors_dtype_to_torch(e.dtype)));
  if (e.end > e.begin) std::memcpy(t.data_ptr(), raw(name), e.end - e.begin);
  return t;
}

std::string safetensors_serialize(const std::map<std::string, torch::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> cpu;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    PATCHLLM_CHECK(t.defined(), InvalidArgument, "safetensors_write: tensor '", name, "' is undefined");
    auto c = t.detach().to(torch::kCPU).contiguous();
    uint64_t n = c.numel() * c.element_size();
    header[name] = {{"dtype", safetensors_dtype_from_torch(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    cpu.push_back(c);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // align the data section to 8 bytes, as the reference writer does
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t hlen = h.size();
  out.append(reinterpret_cast<const char*>(&hlen), 8);
  out += h;
  for (const auto& c : cpu) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return out;
}

void safetensors_write(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  file_write_atomic(path, safetensors_serialize(tensors, metadata));
}

Checkpoint::Checkpoint(const std::string& model_dir) {
  std::string single = path_join(model_dir, "model.safetensors");
  std::string index = path_join(model_dir, "model.safetensors.index.json");
  if (file_exists(index)) {
    nlohmann::json j = json_read_file(index);
    PATCHLLM_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), FormatError, index, ": no weight_map");
    std::map<std::string, size_t> shard_idx;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      PATCHLLM_CHECK(it->is_string(), FormatError, index, ": weight_map entry '", it.key(), "' is not a file name");
      std::string f = it->get<std::string>();
      PATCHLLM_CHECK(f.find('/') == std::string::npos, FormatError, index, ": shard name '", f, "' has a path");
      if (!shard_idx.count(f)) {
        shard_idx[f] = _shards.size();
        _files.push_back(path_join(model_dir, f));
        _shards.push_back(std::make_unique<SafetensorsFile>(_files.back()));
      }
      size_t s = shard_idx[f];
      PATCHLLM_CHECK(_shards[s]->has(it.key()), FormatError, _files[s], ": tensor '", it.key(),
                     "' listed in the index is missing");
      _where[it.key()] = s;
    }
  } else {
    PATCHLLM_CHECK(file_exists(single), FormatError, model_dir,
                   ": no model.safetensors or model.safetensors.index.json");
    _files.push_back(single);
    _shards.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& kv : _shards[0]->entries()) _where[kv.first] = 0;
  }
}

torch::Tensor Checkpoint::load(const std::string& name) const {
  auto it = _where.find(name);
  PATCHLLM_CHECK(it != _where.end(), FormatError, _files.empty() ? "" : _files[0], ": missing tensor '", name, "'");
  return _shards[it->second]->load(name);
}

const SafetensorsEntry& Checkpoint::entry(const std::string& name) const {
  auto it = _where.find(name);
  PATCHLLM_CHECK(it != _where.end(), FormatError, _files.empty() ? "" : _files[0], ": missing tensor '", name, "'");
  return _shards[it->second]->entry(name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : _where) out.push_back(kv.first);
  return out;
}

}  // namespace patchllm
