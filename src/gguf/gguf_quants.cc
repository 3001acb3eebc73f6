// Dequantisation of ggml block formats to float32: ports of ggml-quants.c dequantize_row_* (same operation order,
// so results match ggml and gguf-py bit for bit on IEEE float32). Block layouts are in the structs below; all
// fields are little-endian and blocks are byte-packed, so they are read with memcpy, never through casts.
#include <cstring>

#include "core/error.h"
#include "gguf/gguf.h"

namespace patchllm {

float gguf_fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalise into a float32 normal.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t gguf_fp32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00 | static_cast<uint16_t>((abs >> 13) & 0x3ff);  // NaN, quiet
  if (abs >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero) in half: shift the full mantissa with round-to-nearest-even.
    if (abs < 0x33000000u) return sign;  // < 2^-25: rounds to zero
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfff + ((r >> 13) & 1);    // round to nearest even on the 13 dropped bits
  return sign | static_cast<uint16_t>(r >> 13);
}

float gguf_bf16_to_fp32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t gguf_fp32_to_bf16(float f) {
  // ggml_compute_fp32_to_bf16: NaN forced quiet, otherwise round to nearest even.
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 64);
  return static_cast<uint16_t>((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

namespace {

constexpr int QK = 32;    // elements per legacy block
constexpr int QK_K = 256; // elements per K-quant super-block

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return gguf_fp16_to_fp32(h);
}

// Q4_0: {f16 d; u8 qs[16]}; element j = (nibble - 8) * d, low nibbles first then high nibbles.
void deq_q4_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < QK / 2; ++j) {
    y[j] = ((qs[j] & 0x0f) - 8) * d;
    y[j + QK / 2] = ((qs[j] >> 4) - 8) * d;
  }
}
// Q4_1: {f16 d; f16 m; u8 qs[16]}.
void deq_q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < QK / 2; ++j) {
    y[j] = (qs[j] & 0x0f) * d + m;
    y[j + QK / 2] = (qs[j] >> 4) * d + m;
  }
}
// Q5_0: {f16 d; u8 qh[4]; u8 qs[16]}; bit j of qh is the 5th bit of element j.
void deq_q5_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < QK / 2; ++j) {
    const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
    y[j] = (((qs[j] & 0x0f) | xh0) - 16) * d;
    y[j + QK / 2] = (((qs[j] >> 4) | xh1) - 16) * d;
  }
}
// Q5_1: {f16 d; f16 m; u8 qh[4]; u8 qs[16]}.
void deq_q5_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < QK / 2; ++j) {
    const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
    y[j] = ((qs[j] & 0x0f) | xh0) * d + m;
    y[j + QK / 2] = ((qs[j] >> 4) | xh1) * d + m;
  }
}
// Q8_0: {f16 d; i8 qs[32]}.
void deq_q8_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < QK; ++j) y[j] = qs[j] * d;
}

// Q2_K: {u8 scales[16] (lo nibble scale, hi nibble min); u8 qs[64] (2-bit); f16 d; f16 dmin}.
void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  int is = 0;
  for (int n = 0; n < QK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      uint8_t sc = scales[is++];
      float dl = d * (sc & 0xf), ml = dmin * (sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<int8_t>((q[l] >> shift) & 3) - ml;
      sc = scales[is++];
      dl = d * (sc & 0xf);
      ml = dmin * (sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<int8_t>((q[l + 16] >> shift) & 3) - ml;
      shift += 2;
    }
    q += 32;
  }
}

// Q3_K: {u8 hmask[32]; u8 qs[64]; u8 scales[12] (16 x 6-bit, packed); f16 d}.
void deq_q3_k(const uint8_t* b, float* y) {
  const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const float d_all = half_at(b + 108);
  uint32_t aux[4];
  std::memcpy(aux, b + 96, 12);
  const uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  int8_t scales[16];
  std::memcpy(scales, aux, 16);
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < QK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      float dl = d_all * (scales[is++] - 32);
      for (int l = 0; l < 16; ++l)
        *y++ = dl * (static_cast<int8_t>((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
      dl = d_all * (scales[is++] - 32);
      for (int l = 0; l < 16; ++l)
        *y++ = dl * (static_cast<int8_t>((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
      shift += 2;
      m <<= 1;
    }
    q += 32;
  }
}

// 6-bit scale and min j (0..7) of a Q4_K/Q5_K super-block, from the 12 packed scale bytes.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}; 8 sub-blocks of 32, each with its own scale and min.
void deq_q4_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  uint8_t sc, m;
  for (int j = 0; j < QK_K; j += 64) {
    scale_min_k4(is + 0, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xf) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

// Q5_K: {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}.
void deq_q5_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  int is = 0;
  uint8_t sc, m;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < QK_K; j += 64) {
    scale_min_k4(is + 0, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 <<= 2;
    u2 <<= 2;
  }
}

// Q6_K: {u8 ql[128] (low 4 bits); u8 qh[64] (high 2 bits); i8 scales[16]; f16 d}.
void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (int n = 0; n < QK_K; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int8_t q1 = static_cast<int8_t>((ql[l + 0] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int8_t q2 = static_cast<int8_t>((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int8_t q3 = static_cast<int8_t>((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int8_t q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * sc[is + 0] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// Q8_K: {f32 d; i8 qs[256]; i16 bsums[16]} (bsums only speed up dot products).
void deq_q8_k(const uint8_t* b, float* y) {
  float d;
  std::memcpy(&d, b, 4);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < QK_K; ++j) y[j] = d * qs[j];
}

template <typename F>
void per_block(const uint8_t* src, float* dst, int64_t n, int64_t block, int64_t bytes, F f) {
  const int64_t nb = n / block;
  for (int64_t i = 0; i < nb; ++i) f(src + i * bytes, dst + i * block);
}

}  // namespace

void gguf_dequantize(GgmlType type, const void* src_v, float* dst, int64_t n) {
  const uint8_t* src = static_cast<const uint8_t*>(src_v);
  const int64_t block = gguf_ggml_block_size(type), bytes = gguf_ggml_type_size(type);
  PATCHLLM_CHECK(gguf_ggml_can_dequantize(type), InvalidArgument, "unsupported tensor type ",
                 gguf_ggml_type_name(type));
  PATCHLLM_CHECK(n >= 0 && n % block == 0, InvalidArgument, "gguf_dequantize: ", n,
                 " elements is not a multiple of the ", gguf_ggml_type_name(type), " block size ", block);
  if (n == 0) return;  // an empty tensor: dst may be null, and memcpy(nullptr, ..., 0) is undefined
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = half_at(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = gguf_bf16_to_fp32(h);
      }
      return;
    case GgmlType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    case GgmlType::I8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<int8_t>(src[i]);
      return;
    case GgmlType::I16:
      for (int64_t i = 0; i < n; ++i) {
        int16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        dst[i] = v;
      }
      return;
    case GgmlType::I32:
      for (int64_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        dst[i] = static_cast<float>(v);
      }
      return;
    case GgmlType::Q4_0: per_block(src, dst, n, block, bytes, deq_q4_0); return;
    case GgmlType::Q4_1: per_block(src, dst, n, block, bytes, deq_q4_1); return;
    case GgmlType::Q5_0: per_block(src, dst, n, block, bytes, deq_q5_0); return;
    case GgmlType::Q5_1: per_block(src, dst, n, block, bytes, deq_q5_1); return;
    case GgmlType::Q8_0: per_block(src, dst, n, block, bytes, deq_q8_0); return;
    case GgmlType::Q2_K: per_block(src, dst, n, block, bytes, deq_q2_k); return;
    case GgmlType::Q3_K: per_block(src, dst, n, block, bytes, deq_q3_k); return;
    case GgmlType::Q4_K: per_block(src, dst, n, block, bytes, deq_q4_k); return;
    case GgmlType::Q5_K: per_block(src, dst, n, block, bytes, deq_q5_k); return;
    case GgmlType::Q6_K: per_block(src, dst, n, block, bytes, deq_q6_k); return;
    case GgmlType::Q8_K: per_block(src, dst, n, block, bytes, deq_q8_k); return;
    default: break;
  }
  throw InvalidArgument(str("unsupported tensor type ", gguf_ggml_type_name(type)));
}

}  // namespace patchllm
