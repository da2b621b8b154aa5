// cuBLAS loaded at run time (dlopen): the build needs no cuBLAS headers or
// libraries, and one binary runs on hosts with and without a GPU.
#pragma once
#include <string>

#include "../native/dtype.h"

namespace fa {
namespace cuda {

// Loads libcublasLt and libcublas (.so.13, then .so.12). Returns false with the reason.
bool loadCublas(std::string* loaded, std::string* reason);

// Row-major C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b], fp32 accumulation,
// A, B, C of dtype dt (float32, bfloat16 or float16). op(A) is M x K, op(B) is K x N.
// lda/ldb/ldc are row strides; strides between batches in elements (0 for one matrix).
void gemm(int dev, DType dt, bool transA, bool transB, int M, int N, int K, float alpha,
          const void* A, int lda, long long strideA, const void* B, int ldb, long long strideB,
          float beta, void* C, int ldc, long long strideC, int batch, const char* op);

// As gemm, with C of its own dtype (e.g. fp32 C from bf16 A and B).
void gemmEx(int dev, DType abType, DType cType, bool transA, bool transB, int M, int N, int K, float alpha,
            const void* A, int lda, long long strideA, const void* B, int ldb, long long strideB,
            float beta, void* C, int ldc, long long strideC, int batch, const char* op);

}  // namespace cuda
}  // namespace fa
