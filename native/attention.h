// The fused attention contract shared by the CPU and CUDA kernels (native/cpu/attention.h,
// cuda/attention.h): q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D]; query head h uses K/V head
// h / (Hq / Hkv); a key mask [B, Tk] (nonzero = attend) is optional; causal: query i sees keys
// j <= i + Tk - Tq; segments [B, T] (int32, Tq = Tk), when given, keep attention inside a segment
// (packed sequences): query i sees key j only when segments[b, i] == segments[b, j].
#pragma once
#include <cstddef>
#include <cstdint>

namespace fa {

struct AttentionShape {
  size_t B, Hq, Hkv, Tq, Tk, D;
  float scale;
  bool causal;
  const int32_t* segments;  // [B, T] or null
};

}  // namespace fa
