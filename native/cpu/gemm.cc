// CPU GEMM: the host's cblas_sgemm (OpenBLAS, found at run time: blas.h) when there is one,
// else a portable blocked loop. bf16/fp16 operands are widened to fp32 first.
#include <algorithm>
#include <vector>

#include "basic.h"
#include "blas.h"
#include "parallel.h"

namespace fa {
namespace cpu {

const char* blasName() { return hostBlas().name; }

namespace {

// C = alpha * op(A) op(B) + beta * C, fp32, row-major, one matrix.
void sgemm(bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc) {
  const HostBlas& hb = hostBlas();
  if (M == 1 && hb.sgemv) {
    // one row of C = op(B)ᵀ · (row 0 of op(A)): a GEMV reads B once, where a GEMM would pack it first
    hb.sgemv(kCblasRowMajor, tB ? kCblasNoTrans : kCblasTrans, tB ? N : K, tB ? K : N, alpha, B, ldb, A, tA ? lda : 1, beta,
             C, 1);
    return;
  }
  if (CblasSgemm blas = hb.sgemm) {
    blas(kCblasRowMajor, tA ? kCblasTrans : kCblasNoTrans, tB ? kCblasTrans : kCblasNoTrans, M, N, K, alpha, A, lda, B,
         ldb, beta, C, ldc);
    return;
  }
  // Portable fallback: op(B) packed as K x N rows (contiguous inner loop); each task takes 4 rows of C
  // and 256 columns at a time, so one load of a B row feeds 4 multiply-adds and the accumulators stay
  // in L1. No shortcut for zeros in A: 0 · inf is NaN here as in BLAS.
  std::vector<float> Bp(size_t(K) * N);
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++) Bp[size_t(k) * N + n] = tB ? B[size_t(n) * ldb + k] : B[size_t(k) * ldb + n];
  constexpr int MB = 4, NB = 256;
  const size_t blocks = (size_t(M) + MB - 1) / MB;
  parallelFor(blocks, 1, [&](size_t b0, size_t b1) {
    float acc[MB][NB];
    for (size_t blk = b0; blk < b1; blk++) {
      const int m0 = int(blk) * MB, rows = std::min(MB, M - m0);
      for (int n0 = 0; n0 < N; n0 += NB) {
        const int cols = std::min(NB, N - n0);
        for (int i = 0; i < MB; i++) std::fill(acc[i], acc[i] + cols, 0.0f);
        for (int k = 0; k < K; k++) {
          float a[MB];
          for (int i = 0; i < MB; i++)
            a[i] = i < rows ? (tA ? A[size_t(k) * lda + m0 + i] : A[size_t(m0 + i) * lda + k]) : 0.0f;
          const float* b = &Bp[size_t(k) * N + n0];
          for (int n = 0; n < cols; n++) {
            const float bn = b[n];
            acc[0][n] += a[0] * bn;
            acc[1][n] += a[1] * bn;
            acc[2][n] += a[2] * bn;
            acc[3][n] += a[3] * bn;
          }
        }
        for (int i = 0; i < rows; i++) {
          float* c = C + size_t(m0 + i) * ldc + n0;
          for (int n = 0; n < cols; n++) c[n] = alpha * acc[i][n] + (beta == 0.0f ? 0.0f : beta * c[n]);
        }
      }
    }
  });
}

}  // namespace

void gemm(DType dt, bool transA, bool transB, int M, int N, int K, float alpha,
          const void* A, int lda, long long strideA, const void* B, int ldb, long long strideB,
          float beta, void* C, int ldc, long long strideC, int batch, const char*) {
  if (M == 0 || N == 0) return;
  size_t aRows = transA ? K : M, bRows = transB ? N : K;
  for (int b = 0; b < batch; b++) {
    if (dt == DType::F32) {
      const float* a = static_cast<const float*>(A) + b * strideA;
      const float* bb = static_cast<const float*>(B) + b * strideB;
      float* c = static_cast<float*>(C) + b * strideC;
      if (K == 0) {
        for (int m = 0; m < M; m++)
          for (int n = 0; n < N; n++) c[size_t(m) * ldc + n] = beta == 0.0f ? 0.0f : beta * c[size_t(m) * ldc + n];
        continue;
      }
      sgemm(transA, transB, M, N, K, alpha, a, lda, bb, ldb, beta, c, ldc);
      continue;
    }
    // Widen: the operands are dense here (ld equals the row length), as ops.cc guarantees.
    size_t es = dtypeSize(dt);
    std::vector<float> a(aRows * lda), bm(bRows * ldb), c(size_t(M) * ldc);
    toFloat(dt, static_cast<const char*>(A) + b * strideA * es, a.data(), a.size());
    toFloat(dt, static_cast<const char*>(B) + b * strideB * es, bm.data(), bm.size());
    char* cPtr = static_cast<char*>(C) + b * strideC * es;
    if (beta != 0.0f) toFloat(dt, cPtr, c.data(), c.size());
    if (K == 0) {
      for (auto& v : c) v = beta == 0.0f ? 0.0f : beta * v;
    } else {
      sgemm(transA, transB, M, N, K, alpha, a.data(), lda, bm.data(), ldb, beta, c.data(), ldc);
    }
    fromFloat(dt, c.data(), cPtr, c.size());
  }
}

}  // namespace cpu
}  // namespace fa
