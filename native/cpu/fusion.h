// AdapterFusion's attention on the CPU: the reference the CUDA kernels are tested against
// (definition in native/fusion.h).
#pragma once
#include "../dtype.h"
#include "../fusion.h"

namespace fa {
namespace cpu {

void fusionAttention(DType t, const void* q, const void* k, const void* v, void* out, float* probs, const FusionShape& s);
void fusionAttentionBackward(DType t, const void* dOut, const void* q, const void* k, const void* v, const float* probs,
                             void* dq, void* dk, void* dv, const FusionShape& s);

}  // namespace cpu
}  // namespace fa
