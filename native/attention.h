// The fused attention contract shared by the CPU and CUDA kernels (native/cpu/attention.h,
// cuda/attention.h): q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D]; query head h uses K/V head
// h / (Hq / Hkv); a key mask [B, Tk] (nonzero = attend) is optional; causal: query i sees keys
// j <= i + Tk - Tq.
#pragma once
#include <cstddef>

namespace fa {

struct AttentionShape {
  size_t B, Hq, Hkv, Tq, Tk, D;
  float scale;
  bool causal;
};

}  // namespace fa
