// Optimizer kernels on host memory: the AdamW step over many tensors at once, and the
// sum of squares / in-place scaling used for clipping gradients by their global norm.
// The CUDA versions in cuda/optim.h take the same descriptors and are tested against these.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../dtype.h"

namespace fa {

// One tensor of an AdamW step. The host fills in the per-tensor scalars (computed in
// double, then rounded to fp32 as torch rounds its Python-float scalars):
//   decay    = 1 - lr * weightDecay
//   stepSize = -(lr / (1 - beta1^t))          (negated, as torch's addcdiv value)
//   bc2Sqrt  = sqrt(1 - beta2^t)
struct AdamWTensor {
  void* param = nullptr;          // dtype paramType, updated in place
  const void* grad = nullptr;     // dtype gradType, read as fp32
  float* expAvg = nullptr;        // fp32
  float* expAvgSq = nullptr;      // fp32
  float* master = nullptr;        // fp32 master weights when paramType != F32, else nullptr
  size_t n = 0;
  DType paramType = DType::F32;
  DType gradType = DType::F32;
  float decay = 1.0f;
  float stepSize = 0.0f;
  float bc2Sqrt = 1.0f;
};

// Scalars shared by every tensor of one step (fp32-rounded Python floats in torch).
struct AdamWConsts {
  float beta1, oneMinusBeta1, beta2, oneMinusBeta2, eps;
};

// A tensor of sumOfSquares / scaleInPlace.
struct NormTensor {
  void* data = nullptr;
  size_t n = 0;
  DType dtype = DType::F32;
};

// Elements per chunk of the multi-tensor kernels (both backends): the unit of work, and
// of the partial sums whose fixed-order total makes sumOfSquares deterministic.
constexpr size_t kOptimChunk = size_t(1) << 14;

// The per-element update, shared by both backends, in torch's single-tensor order:
//   p = p * decay; m = m*b1 + (1-b1)*g; v = v*b2 + ((1-b2)*g)*g;
//   denom = sqrt(v) / bc2Sqrt + eps; p = p + (stepSize * m) / denom
// Every operation is rounded to fp32 (no fused multiply-add), so CPU and CUDA agree bitwise.

namespace cpu {

// Updates every tensor in ts[0, count): moments, master (when present) and param.
void adamwStep(const AdamWTensor* ts, size_t count, const AdamWConsts& c);

// Σ x² over every element of every tensor: squares in fp32, summed in double per chunk
// (kOptimChunk elements) and the chunk partials in chunk order: the same result on any
// thread count.
double sumOfSquares(const NormTensor* ts, size_t count);

// x *= s for every element of every tensor (rounded back to its dtype).
void scaleInPlace(const NormTensor* ts, size_t count, float s);

}  // namespace cpu
}  // namespace fa
