// CUDA versions of native/cpu/attention.h: fused attention forward and backward, tiled so that
// no [Tq, Tk] matrix is ever stored; same arguments plus the device, queued on its stream.
// Deterministic (no atomics): dK/dV and dQ come from separate kernels, each output owned by one warp.
#pragma once
#include "../native/attention.h"
#include "../native/dtype.h"

namespace fa {
namespace cuda {

// Head sizes the kernels take (the caller uses the unfused path otherwise).
constexpr size_t kAttentionMaxD = 128;

void attention(int dev, DType t, const void* q, const void* k, const void* v, const void* keyMask, DType maskType,
               void* out, float* lse, const AttentionShape& s);
void attentionBackward(int dev, DType t, const void* q, const void* k, const void* v, const void* out,
                       const void* dOut, const float* lse, const void* keyMask, DType maskType, void* dq, void* dk,
                       void* dv, const AttentionShape& s);

}  // namespace cuda
}  // namespace fa
