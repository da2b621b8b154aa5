// The fused attention contract shared by the CPU and CUDA kernels (native/cpu/attention.h,
// cuda/attention.h): q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D]; query head h uses K/V head
// h / (Hq / Hkv); a key mask [B, Tk] (nonzero = attend) is optional; causal: query i sees keys
// j <= i + Tk - Tq; segments [B, T] (int32, Tq = Tk), when given, keep attention inside a segment
// (packed sequences): query i sees key j only when segments[b, i] == segments[b, j].
#pragma once
#include <cstddef>
#include <cstdint>

#include "philox.h"  // FA_HD

namespace fa {

struct AttentionShape {
  size_t B, Hq, Hkv, Tq, Tk, D;
  float scale;
  bool causal;
  const int32_t* segments;  // [B, T] or null
  // Rows per head in the k and v buffers (and the key mask's row length): Tk when 0. Larger for a KV
  // cache, of which the first Tk rows are filled (forward only).
  size_t kvStride;
  FA_HD size_t stride() const { return kvStride ? kvStride : Tk; }
};

}  // namespace fa
