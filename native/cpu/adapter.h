// CPU reference of the bottleneck adapter (see native/adapter.h): BLAS GEMMs and
// fused, multithreaded elementwise passes, fp32 compute.
#pragma once
#include "../adapter.h"

namespace fa {
namespace cpu {

// out: [N, d] of args.dtype; hPre: [N, r] fp32 (may be nullptr when not needed).
void adapterForward(const AdapterArgs& args, void* out, float* hPre);
void adapterBackward(const AdapterArgs& args, const void* dOut, const float* hPre, const AdapterGrads& g);
void adapterForwardBatched(const BatchedArgs& args, void* out);

}  // namespace cpu
}  // namespace fa
