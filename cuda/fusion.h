// CUDA version of native/cpu/fusion.h (definition in native/fusion.h): same arguments plus the
// device, queued on its stream. At most kFusionMaxAdapters adapters per fusion.
#pragma once
#include "../native/dtype.h"
#include "../native/fusion.h"

namespace fa {
namespace cuda {

constexpr size_t kFusionMaxAdapters = 32;

void fusionAttention(int dev, DType t, const void* q, const void* k, const void* v, void* out, float* probs,
                     const FusionShape& s);
void fusionAttentionBackward(int dev, DType t, const void* dOut, const void* q, const void* k, const void* v,
                             const float* probs, void* dq, void* dk, void* dv, const FusionShape& s);

}  // namespace cuda
}  // namespace fa
