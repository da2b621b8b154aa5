// Philox4x32-10: a counter-based generator, so that the CPU and CUDA backends
// draw the same numbers for the same (seed, element index) without sharing state.
// Used by seeded random fills and by adapter dropout masks.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FA_HD __host__ __device__ __forceinline__
#else
#define FA_HD inline
#endif

namespace fa {

struct U32x4 { uint32_t x, y, z, w; };

FA_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

// Four 32-bit random words for block `ctr` of stream (seed, offset).
FA_HD U32x4 philox4x32(uint64_t seed, uint64_t ctr, uint64_t offset) {
  uint32_t c0 = uint32_t(ctr), c1 = uint32_t(ctr >> 32), c2 = uint32_t(offset), c3 = uint32_t(offset >> 32);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; round++) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{c0, c1, c2, c3};
}

// The i-th 32-bit word of stream (seed, offset): word i%4 of block i/4.
FA_HD uint32_t philoxWord(uint64_t seed, uint64_t offset, uint64_t i) {
  U32x4 r = philox4x32(seed, i >> 2, offset);
  switch (i & 3) { case 0: return r.x; case 1: return r.y; case 2: return r.z; default: return r.w; }
}

// Uniform in (0, 1): never 0, so log() is safe.
FA_HD float uintToUnit(uint32_t u) { return (float(u >> 8) + 0.5f) * (1.0f / 16777216.0f); }

// Dropout keeps an element when its word is >= threshold; an integer compare,
// so both backends agree exactly.
FA_HD uint32_t dropoutThreshold(float p) {
  double t = double(p) * 4294967296.0;
  return t >= 4294967295.0 ? 0xffffffffu : uint32_t(t);
}

}  // namespace fa
