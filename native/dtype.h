// Element types shared by the bindings, the CPU kernels and the CUDA launchers.
// Host-side conversions only; device code uses cuda_bf16.h / cuda_fp16.h.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
#include <string>

namespace fa {

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2, I32 = 3 };

inline size_t dtypeSize(DType t) { return t == DType::F32 || t == DType::I32 ? 4 : 2; }

inline const char* dtypeName(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::I32: return "int32";
  }
  return "?";
}

inline bool parseDType(const std::string& s, DType* out) {
  if (s == "float32") *out = DType::F32;
  else if (s == "bfloat16") *out = DType::BF16;
  else if (s == "float16") *out = DType::F16;
  else if (s == "int32") *out = DType::I32;
  else return false;
  return true;
}

inline bool isFloat(DType t) { return t != DType::I32; }

// float -> bfloat16 with round-to-nearest-even; NaN stays NaN.
inline uint16_t floatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float bf16ToFloat(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE half, round-to-nearest-even, with subnormals, overflow to inf.
inline uint16_t floatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u);       // NaN
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);      // overflow (rounds to inf)
  if (ax < 0x38800000u) {                                      // subnormal or zero in half
    if (ax < 0x33000000u) return uint16_t(sign);               // below half of the smallest subnormal
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                                  // 14 + (113 - e) ... places m at 2^-24 units
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return uint16_t(sign | r);
  }
  uint32_t r = ax - 0x38000000u;                               // rebias exponent 127 -> 15
  uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
  return uint16_t(sign | r);
}

inline float halfToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  uint32_t u;
  if (e == 0) {
    if (m == 0) u = sign;
    else {                                                     // subnormal: normalise
      float f = std::ldexp(float(m), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Converts n floats to dtype t at dst (host memory).
inline void storeFromFloat(DType t, const float* src, void* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); break;
    case DType::BF16: { auto* d = static_cast<uint16_t*>(dst); for (size_t i = 0; i < n; i++) d[i] = floatToBf16(src[i]); break; }
    case DType::F16: { auto* d = static_cast<uint16_t*>(dst); for (size_t i = 0; i < n; i++) d[i] = floatToHalf(src[i]); break; }
    case DType::I32: { auto* d = static_cast<int32_t*>(dst); for (size_t i = 0; i < n; i++) d[i] = int32_t(src[i]); break; }
  }
}

inline void loadToFloat(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); break;
    case DType::BF16: { auto* s = static_cast<const uint16_t*>(src); for (size_t i = 0; i < n; i++) dst[i] = bf16ToFloat(s[i]); break; }
    case DType::F16: { auto* s = static_cast<const uint16_t*>(src); for (size_t i = 0; i < n; i++) dst[i] = halfToFloat(s[i]); break; }
    case DType::I32: { auto* s = static_cast<const int32_t*>(src); for (size_t i = 0; i < n; i++) dst[i] = float(s[i]); break; }
  }
}

}  // namespace fa
