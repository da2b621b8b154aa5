// The host's BLAS, found at run time (dlopen), like cuBLAS: one prebuilt binary runs on hosts
// with OpenBLAS (fast CPU GEMM) and without it (the portable loop), and links against nothing.
#pragma once
#include <string>

namespace fa {
namespace cpu {

// cblas_sgemm's signature, with CBLAS's enum values as ints (row-major 101, no-trans 111, trans 112).
using CblasSgemm = void (*)(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A,
                            int lda, const float* B, int ldb, float beta, float* C, int ldc);

// cblas_sgemv's: y = alpha·op(A)·x + beta·y.
using CblasSgemv = void (*)(int order, int transA, int M, int N, float alpha, const float* A, int lda, const float* x,
                            int incX, float beta, float* y, int incY);

constexpr int kCblasRowMajor = 101;
constexpr int kCblasNoTrans = 111;
constexpr int kCblasTrans = 112;

struct HostBlas {
  CblasSgemm sgemm = nullptr;  // null: no usable BLAS, GEMM runs the portable loop
  CblasSgemv sgemv = nullptr;  // one-row products (decoding a token) read the matrix once, unpacked
  const char* name = nullptr;  // "openblas", "blis", "mkl", "cblas"; null when none
  std::string version;         // what the library says of itself (OpenBLAS's config string, MKL's version), or ""
  std::string file;            // the library file opened
};

// Looked up once: FUSED_ADAPTERS_BLAS (a library path, or "none"), else libopenblas, BLIS, MKL,
// then the system's libcblas / libblas (Debian's alternatives point it at OpenBLAS).
const HostBlas& hostBlas();

}  // namespace cpu
}  // namespace fa
