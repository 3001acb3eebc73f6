// Files: read whole, memory-map, write atomically (temp file + rename, never a half-written output), sha256.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace patchllm {

std::string file_read(const std::string& path);  // throws FormatError naming the file
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
void dir_create(const std::string& path);  // mkdir -p
bool dir_is_empty(const std::string& path);  // true also when it does not exist
// rm -rf without following symlinks; a missing path is not an error. Empty string on success, else why it failed.
// (POSIX nftw, not std::filesystem: std::filesystem::remove_all crashed in GPU builds against PyTorch's LibTorch.)
std::string dir_remove_all(const std::string& path);
// Bytes an unprivileged writer may still use on the file system holding `dir` (statvfs); -1 if it cannot be read.
int64_t disk_free_bytes(const std::string& dir);
// rename(2); empty string on success, else strerror.
std::string path_rename(const std::string& from, const std::string& to);
std::string path_join(const std::string& a, const std::string& b);

// Writes `data` to `path` via `path.tmp.<pid>` + rename.
void file_write_atomic(const std::string& path, const std::string& data);

// Read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return _data; }
  size_t size() const { return _size; }
  const std::string& path() const { return _path; }

 private:
  std::string _path;
  const uint8_t* _data = nullptr;
  size_t _size = 0;
};

std::string sha256_hex(const void* data, size_t n);
std::string sha256_file(const std::string& path);

}  // namespace patchllm
