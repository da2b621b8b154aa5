// Elementwise ops, casts, fills and reductions on host memory. The CUDA
// versions in cuda/basic.h have the same meaning; these are their reference.
// All compute in fp32 whatever the storage dtype.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "../dtype.h"

namespace fa {
namespace cpu {

// out[i] = a[i] + alpha * b[i % nb]   (nb divides n: b broadcasts over leading dims)
void add(DType t, const void* a, const void* b, void* out, size_t n, size_t nb, float alpha);
// out[i] = a[i] * b[i % nb]
void mul(DType t, const void* a, const void* b, void* out, size_t n, size_t nb);
// out[i] = s * a[i]
void scale(DType t, const void* a, void* out, size_t n, float s);
void cast(DType from, const void* src, DType to, void* dst, size_t n);
void fill(DType t, void* out, size_t n, float v);
// Philox-based: normal (mean, std) when normal, else uniform [lo=mean, hi=std).
void randomFill(DType t, void* out, size_t n, uint64_t seed, bool normal, float a, float b);
// out = act(x); with dy: out = dy ⊙ act'(x)
void activation(DType t, const void* x, void* out, size_t n, Act act);
void activationGrad(DType t, const void* x, const void* dy, void* out, size_t n, Act act);
// out[r] = sum_c x[r, c]
void rowSum(DType t, const void* x, void* out, size_t rows, size_t cols);
// out[c] = sum_r x[r, c]
void colSum(DType t, const void* x, void* out, size_t rows, size_t cols);

// Row-major C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b] (see cuda/cublas.h).
void gemm(DType dt, bool transA, bool transB, int M, int N, int K, float alpha,
          const void* A, int lda, long long strideA, const void* B, int ldb, long long strideB,
          float beta, void* C, int ldc, long long strideC, int batch, const char* op);

// Which GEMM the build uses: "openblas" / "cblas" or null (portable fallback).
const char* blasName();

// Shared by the kernels: fp32 views of any-dtype host data.
void toFloat(DType t, const void* src, float* dst, size_t n);
void fromFloat(DType t, const float* src, void* dst, size_t n);

}  // namespace cpu
}  // namespace fa
