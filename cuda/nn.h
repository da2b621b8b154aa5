// CUDA versions of native/cpu/nn.h: same arguments plus the device, queued on the
// device's stream; pointers are device pointers. Deterministic: every reduction runs
// in a fixed order. Plain C++ (no CUDA headers) for the bindings.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../native/dtype.h"

namespace fa {
namespace cuda {

void layerNorm(int dev, DType t, const void* x, const void* residual, const void* weight, const void* bias, void* out,
               float* mean, float* rstd, size_t rows, size_t H, float eps);
void layerNormBackward(int dev, DType t, const void* dOut, const void* x, const void* residual, const void* weight,
                       const float* mean, const float* rstd, void* dx, float* dWeight, float* dBias, size_t rows,
                       size_t H);
void maskedSoftmax(int dev, DType t, const void* scores, const void* keyMask, DType maskType, void* probs,
                   size_t rows, size_t Tk, size_t rowsPerBatch, float scale, size_t causalTq = 0);
void maskedSoftmaxBackward(int dev, DType t, const void* probs, const void* dProbs, void* dScores, size_t rows,
                           size_t Tk, float scale);
void transpose12(int dev, size_t elemSize, const void* x, void* out, size_t A, size_t B, size_t C, size_t D);

// The ops below check their int32 indices on the device: an index outside [0, limit)
// is recorded (the smallest such position), nothing is read or written through it, and
// the call returns that position with the value in *bad (it waits for the stream to do
// so), or -1 when every index was valid.
int64_t embedding(int dev, DType t, const void* table, const int32_t* ids, void* out, size_t N, size_t H, size_t V,
                  int32_t* bad);
int64_t embeddingBackward(int dev, DType t, const void* dOut, const int32_t* ids, float* dTable, size_t N, size_t H,
                          size_t V, int32_t* bad);
// Labels equal to ignoreIndex are allowed whatever their value.
int64_t softmaxCrossEntropy(int dev, DType t, const void* logits, const int32_t* labels, float* loss, void* dLogits,
                            size_t rows, size_t C, int32_t ignoreIndex, int32_t* bad);

void dropout(int dev, DType t, const void* x, void* out, size_t n, float p, uint64_t seed);

}  // namespace cuda
}  // namespace fa
