#include "core/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace patchllm {

std::string file_read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  PATCHLLM_CHECK(f.good(), FormatError, path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

int64_t disk_free_bytes(const std::string& dir) {
  struct statvfs v;
  if (::statvfs(dir.empty() ? "." : dir.c_str(), &v) != 0) return -1;
  return int64_t(v.f_bavail) * int64_t(v.f_frsize);
}

void dir_create(const std::string& path) {
  if (path.empty() || dir_exists(path)) return;
  auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) dir_create(path.substr(0, slash));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    throw Error(str(path, ": cannot create directory (", std::strerror(errno), ")"));
}

namespace {
int remove_entry(const char* p, const struct stat*, int, struct FTW*) { return ::remove(p) == 0 ? 0 : errno; }
}  // namespace

std::string dir_remove_all(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? "" : std::strerror(errno);
  // Depth first (children before their directory), physical (a symlink is removed, not followed).
  int rc = ::nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS);
  if (rc == 0) return "";
  return std::strerror(rc > 0 ? rc : errno);
}

std::string path_rename(const std::string& from, const std::string& to) {
  return ::rename(from.c_str(), to.c_str()) == 0 ? "" : std::strerror(errno);
}

bool dir_is_empty(const std::string& d) {
  DIR* dir = opendir(d.c_str());
  if (!dir) return true;
  bool empty = true;
  while (dirent* e = readdir(dir)) {
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) {
      empty = false;
      break;
    }
  }
  closedir(dir);
  return empty;
}

std::string path_join(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty() || b[0] == '/') return b.empty() ? a : b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

void file_write_atomic(const std::string& path, const std::string& data) {
  std::string tmp = str(path, ".tmp.", ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    PATCHLLM_CHECK(f.good(), Error, tmp, ": cannot open for writing (", std::strerror(errno), ")");
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    f.flush();
    if (!f.good()) {
      ::unlink(tmp.c_str());
      throw Error(str(tmp, ": write failed (disk full?)"));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error(str(path, ": cannot rename temp file into place (", std::strerror(e), ")"));
  }
}

MappedFile::MappedFile(const std::string& path) : _path(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  PATCHLLM_CHECK(fd >= 0, FormatError, path, ": cannot open (", std::strerror(errno), ")");
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FormatError(str(path, ": not a regular file"));
  }
  _size = static_cast<size_t>(st.st_size);
  if (_size > 0) {
    void* p = ::mmap(nullptr, _size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw FormatError(str(path, ": mmap failed (", std::strerror(errno), ")"));
    }
    _data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (_data) ::munmap(const_cast<uint8_t*>(_data), _size);
}

std::string sha256_file(const std::string& path) {
  MappedFile f(path);
  return sha256_hex(f.data(), f.size());
}

}  // namespace patchllm
