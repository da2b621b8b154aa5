// CUDA versions of native/cpu/decoder.h: same arguments plus the device, queued on the
// device's stream; pointers are device pointers. Deterministic: reductions run in a fixed
// order. Plain C++ (no CUDA headers) for the bindings.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../native/dtype.h"

namespace fa {
namespace cuda {

void rmsNorm(int dev, DType t, const void* x, const void* weight, void* out, float* rstd, size_t rows, size_t H,
             float eps);
void rmsNormBackward(int dev, DType t, const void* dOut, const void* x, const void* weight, const float* rstd,
                     void* dx, float* dWeight, size_t rows, size_t H);
void rope(int dev, DType t, const void* x, const int32_t* pos, const float* invFreq, void* out, size_t tokens,
          size_t heads, size_t D, size_t rot, bool inverse);

void cacheWrite(int dev, void* dst, const void* src, size_t outer, size_t rows, size_t n, size_t rowBytes, size_t offset);
void gatedActivation(int dev, DType t, const void* gate, const void* up, void* out, size_t n, int act);
void gatedActivationBackward(int dev, DType t, const void* dOut, const void* gate, const void* up, void* dGate,
                             void* dUp, size_t n, int act);

}  // namespace cuda
}  // namespace fa
