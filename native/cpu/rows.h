// Helpers the CPU row kernels share: typed rows read and written as fp32, a parallel grain for
// rows of a given width, and the key-mask test of the attention ops.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../dtype.h"

namespace fa {
namespace cpu {

constexpr size_t kRowGrain = 1 << 14;  // elements per parallel chunk, roughly

// Rows of `cols` elements per parallel chunk.
inline size_t rowGrain(size_t cols) { return std::max<size_t>(1, kRowGrain / std::max<size_t>(cols, 1)); }

// m elements of p (dtype t) from element i, as fp32; and back.
inline void loadAt(DType t, const void* p, size_t i, float* dst, size_t m) {
  loadToFloat(t, static_cast<const char*>(p) + i * dtypeSize(t), dst, m);
}
inline void storeAt(DType t, void* p, size_t i, const float* src, size_t m) {
  storeFromFloat(t, src, static_cast<char*>(p) + i * dtypeSize(t), m);
}

// A key-mask element is "attend" when it is nonzero (either sign of zero counts as 0), for masks of any dtype.
inline bool maskOn(DType mt, const void* m, size_t i) {
  if (dtypeSize(mt) == 2) {
    uint16_t b;
    std::memcpy(&b, static_cast<const char*>(m) + 2 * i, 2);
    return (b & 0x7fffu) != 0;
  }
  uint32_t b;
  std::memcpy(&b, static_cast<const char*>(m) + 4 * i, 4);
  return mt == DType::I32 ? b != 0 : (b & 0x7fffffffu) != 0;
}

}  // namespace cpu
}  // namespace fa
