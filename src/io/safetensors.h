// safetensors: 8-byte LE header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then raw little-endian data. Reading goes through mmap with full validation (offsets inside the data section,
// sizes equal to shape x dtype size, no overlaps, no truncation); every error names the file.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/file.h"

namespace patchllm {

struct SafetensorsEntry {
  std::string dtype;  // "F32", "F16", "BF16", "I8", "U8", "I16", "I32", "I64", "BOOL", "F64"
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return _map->path(); }
  const std::map<std::string, SafetensorsEntry>& entries() const { return _entries; }
  const std::map<std::string, std::string>& metadata() const { return _metadata; }
  bool has(const std::string& name) const { return _entries.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  // A CPU tensor that copies the bytes out of the map (the map may be closed afterwards).
  torch::Tensor load(const std::string& name) const;
  const uint8_t* raw(const std::string& name) const;

 private:
  std::shared_ptr<MappedFile> _map;
  uint64_t _data_start = 0;
  std::map<std::string, SafetensorsEntry> _entries;
  std::map<std::string, std::string> _metadata;
};

// Writes tensors (any device; copied to CPU contiguous) atomically. Tensor names are sorted as in the reference writer.
void safetensors_write(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
std::string safetensors_serialize(const std::map<std::string, torch::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

c10::ScalarType safetensors_dtype_to_torch(const std::string& dtype);  // throws FormatError for unknown
std::string safetensors_dtype_from_torch(c10::ScalarType t);

// A Hugging Face checkpoint: model.safetensors or model.safetensors.index.json with shards.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& model_dir);
  bool has(const std::string& name) const { return _where.count(name) != 0; }
  torch::Tensor load(const std::string& name) const;  // throws FormatError naming the missing tensor
  std::vector<std::string> names() const;
  const SafetensorsEntry& entry(const std::string& name) const;
  const std::vector<std::string>& files() const { return _files; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> _shards;
  std::vector<std::string> _files;
  std::map<std::string, size_t> _where;
};

}  // namespace patchllm
