// CUDA versions of native/cpu/basic.h: same arguments plus the device, queued on
// the device's stream. Pointers are device pointers.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../native/activation.h"
#include "../native/dtype.h"

namespace fa {
namespace cuda {

void add(int dev, DType t, const void* a, const void* b, void* out, size_t n, size_t nb, float alpha);
void mul(int dev, DType t, const void* a, const void* b, void* out, size_t n, size_t nb);
void scale(int dev, DType t, const void* a, void* out, size_t n, float s);
void cast(int dev, DType from, const void* src, DType to, void* dst, size_t n);
void fill(int dev, DType t, void* out, size_t n, float v);
void randomFill(int dev, DType t, void* out, size_t n, uint64_t seed, bool normal, float a, float b);
void activation(int dev, DType t, const void* x, void* out, size_t n, Act act);
void activationGrad(int dev, DType t, const void* x, const void* dy, void* out, size_t n, Act act);
void rowSum(int dev, DType t, const void* x, void* out, size_t rows, size_t cols);
void colSum(int dev, DType t, const void* x, void* out, size_t rows, size_t cols);

}  // namespace cuda
}  // namespace fa
