// MaskLLM's mask_compressed.npz: a zip of .npy files, one per masked weight, "<weight name>.mask.npy" holding
// np.packbits(mask.flatten()) (uint8, row-major, MSB first, 1 = keep). We write stored (uncompressed) zips ourselves;
// reading accepts stored and deflated entries (np.savez_compressed, as MaskLLM releases them), the latter through
// miniz's tinfl, which LibTorch's own zip serializer exports.
#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "mask/mask.h"

extern "C" size_t tinfl_decompress_mem_to_mem(void* out, size_t out_len, const void* src, size_t src_len, int flags);

namespace patchllm {

namespace {

uint32_t crc32(const uint8_t* p, size_t n) {
  static uint32_t table[256];
  static bool init = false;
  if (!init) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    init = true;
  }
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

void put16(std::string& s, uint32_t v) {
  s += char(v & 0xFF);
  s += char((v >> 8) & 0xFF);
}
void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}
uint32_t get16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t get32(const uint8_t* p) { return get16(p) | (uint32_t(get16(p + 2)) << 16); }

// .npy v1.0 of a 1-D uint8 array.
std::string npy_u8(const torch::Tensor& t) {
  std::string header = "{'descr': '|u1', 'fortran_order': False, 'shape': (" + std::to_string(t.numel()) + ",), }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string s = "\x93NUMPY";
  s += char(1);
  s += char(0);
  put16(s, header.size());
  s += header;
  s.append(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), t.numel());
  return s;
}

// Payload bytes of a .npy holding a 1-D (or any-shape) uint8/bool array.
std::string npy_payload(const std::string& npy, const std::string& where) {
  PATCHLLM_CHECK(npy.size() >= 10 && npy.compare(0, 6, "\x93NUMPY") == 0, FormatError, where, ": not a .npy array");
  size_t hl = npy[6] == 1 ? get16(reinterpret_cast<const uint8_t*>(npy.data()) + 8)
                          : get32(reinterpret_cast<const uint8_t*>(npy.data()) + 8);
  size_t start = (npy[6] == 1 ? 10 : 12) + hl;
  PATCHLLM_CHECK(start <= npy.size(), FormatError, where, ": truncated .npy header");
  std::string h = npy.substr(npy[6] == 1 ? 10 : 12, hl);
  PATCHLLM_CHECK(h.find("'|u1'") != std::string::npos || h.find("'|b1'") != std::string::npos, FormatError, where,
                 ": expected a uint8 (np.packbits) array, header ", h.substr(0, h.find('}') + 1));
  PATCHLLM_CHECK(h.find("'fortran_order': False") != std::string::npos, FormatError, where,
                 ": fortran-order arrays are not supported");
  return npy.substr(start);
}

}  // namespace

void mask_save_npz(const std::string& path, const MaskSet& m) {
  std::string zip, central;
  int n = 0;
  for (const auto& [name, lm] : m.masks) {
    std::string fname = name + ".mask.npy";
    std::string data = npy_u8(mask_packbits(lm.keep));
    uint32_t crc = crc32(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    uint32_t offset = zip.size();
    PATCHLLM_CHECK(data.size() < 0xFFFFFFFFull && zip.size() + data.size() < 0xFFFFFFFFull, InvalidArgument, path,
                   ": npz larger than 4 GiB needs zip64, not supported");
    auto common = [&](std::string& s) {
      put16(s, 20);  // version needed
      put16(s, 0);   // flags
      put16(s, 0);   // stored
      put16(s, 0);   // time
      put16(s, 0x21);  // date 1980-01-01
      put32(s, crc);
      put32(s, data.size());
      put32(s, data.size());
      put16(s, fname.size());
      put16(s, 0);  // extra
    };
    put32(zip, 0x04034b50);
    common(zip);
    zip += fname;
    zip += data;
    put32(central, 0x02014b50);
    put16(central, 20);  // version made by
    common(central);
    put16(central, 0);  // comment
    put16(central, 0);  // disk
    put16(central, 0);  // internal attrs
    put32(central, 0);  // external attrs
    put32(central, offset);
    central += fname;
    ++n;
  }
  uint32_t cd_offset = zip.size();
  zip += central;
  put32(zip, 0x06054b50);
  put16(zip, 0);
  put16(zip, 0);
  put16(zip, n);
  put16(zip, n);
  put32(zip, central.size());
  put32(zip, cd_offset);
  put16(zip, 0);
  file_write_atomic(path, zip);
}

MaskSet mask_load_npz(const std::string& path, const std::map<std::string, std::vector<int64_t>>& shapes) {
  PATCHLLM_CHECK(!shapes.empty(), InvalidArgument, path,
                 ": a MaskLLM .npz mask stores no shapes; give the model (-m) it belongs to");
  MappedFile f(path);
  const uint8_t* b = f.data();
  size_t size = f.size();
  // End of central directory: scan back for its signature.
  PATCHLLM_CHECK(size >= 22, FormatError, path, ": too small for a zip/npz file");
  size_t eocd = std::string::npos;
  for (size_t i = size - 22 + 1; i-- > 0 && size - i <= 22 + 65535;)
    if (get32(b + i) == 0x06054b50) {
      eocd = i;
      break;
    }
  PATCHLLM_CHECK(eocd != std::string::npos, FormatError, path, ": not a zip/npz file (no end of central directory)");
  uint32_t count = get16(b + eocd + 10), cd_size = get32(b + eocd + 12), cd_off = get32(b + eocd + 16);
  PATCHLLM_CHECK(cd_off + uint64_t(cd_size) <= eocd, FormatError, path, ": central directory out of range");
  std::map<std::string, std::string> arrays;  // key without .npy -> payload
  size_t p = cd_off;
  for (uint32_t e = 0; e < count; ++e) {
    PATCHLLM_CHECK(p + 46 <= eocd && get32(b + p) == 0x02014b50, FormatError, path, ": bad central directory entry ",
                   e);
    uint32_t method = get16(b + p + 10), crc = get32(b + p + 16), csize = get32(b + p + 20), usize = get32(b + p + 24);
    uint32_t nlen = get16(b + p + 28), xlen = get16(b + p + 30), clen = get16(b + p + 32), loff = get32(b + p + 42);
    PATCHLLM_CHECK(p + 46 + nlen <= eocd, FormatError, path, ": bad central directory entry ", e);
    std::string name(reinterpret_cast<const char*>(b + p + 46), nlen);
    p += 46 + nlen + xlen + clen;
    PATCHLLM_CHECK(csize != 0xFFFFFFFFu && usize != 0xFFFFFFFFu, FormatError, path, ": ", name,
                   ": zip64 entries are not supported");
    PATCHLLM_CHECK(loff + 30ull <= size && get32(b + loff) == 0x04034b50, FormatError, path, ": ", name,
                   ": bad local header");
    size_t data = loff + 30 + get16(b + loff + 26) + get16(b + loff + 28);
    PATCHLLM_CHECK(data + uint64_t(csize) <= size, FormatError, path, ": ", name, ": truncated");
    std::string raw;
    if (method == 0) {
      raw.assign(reinterpret_cast<const char*>(b + data), csize);
    } else {
      PATCHLLM_CHECK(method == 8, FormatError, path, ": ", name, ": zip method ", method, " is not supported");
      raw.resize(usize);
      size_t got = tinfl_decompress_mem_to_mem(raw.data(), usize, b + data, csize, 0);
      PATCHLLM_CHECK(got == usize, FormatError, path, ": ", name, ": deflate stream is corrupt");
    }
    PATCHLLM_CHECK(crc32(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()) == crc,
                   FormatError, path, ": ", name, ": CRC mismatch");
    if (name.size() > 4 && name.substr(name.size() - 4) == ".npy") name = name.substr(0, name.size() - 4);
    arrays[name] = npy_payload(raw, path + ": " + name);
  }
  MaskSet m;
  m.pattern = "2:4";
  m.meta["method"] = "maskllm-npz";
  m.meta["source"] = path;
  m.meta["source_sha256"] = sha256_file(path);
  for (const auto& [wname, shape] : shapes) {
    std::string module = wname.substr(0, wname.size() - 7);  // strip ".weight"
    auto it = arrays.find(wname + ".mask");
    if (it == arrays.end()) it = arrays.find(module + ".mask");
    PATCHLLM_CHECK(it != arrays.end(), FormatError, path, ": no mask for ", wname, " (looked for '", wname,
                   ".mask' and '", module, ".mask')");
    const std::string& bytes = it->second;
    auto packed = torch::from_blob(const_cast<char*>(bytes.data()), {int64_t(bytes.size())}, torch::kUInt8).clone();
    LinearMask lm;
    try {
      lm.keep = mask_unpackbits(packed, shape);
    } catch (const FormatError& err) {
      throw FormatError(str(path, ": ", it->first, ": ", err.what()));
    }
    m.masks[wname] = lm;
  }
  // A MaskLLM mask is 2:4 everywhere; anything else is read as unstructured.
  bool all24 = true;
  for (auto& [n, lm] : m.masks) {
    if (lm.keep.size(1) % 4 != 0) {
      all24 = false;
      break;
    }
    auto g = lm.keep.to(torch::kInt32).reshape({lm.keep.size(0), -1, 4}).sum(2);
    if (!(g == 2).all().item<bool>()) all24 = false;
  }
  if (all24) {
    for (auto& [n, lm] : m.masks) lm.tile_map = mask_tile_map_full(lm.keep.size(0), lm.keep.size(1), 128, 128);
  } else {
    m.pattern = "unstructured";
  }
  return m;
}

}  // namespace patchllm
