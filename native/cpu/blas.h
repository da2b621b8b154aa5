// The host's BLAS, found at run time (dlopen), like cuBLAS: one prebuilt binary runs on hosts
// with OpenBLAS (fast CPU GEMM) and without it (the portable loop), and links against nothing.
#pragma once

namespace fa {
namespace cpu {

// cblas_sgemm's signature, with CBLAS's enum values as ints (row-major 101, no-trans 111, trans 112).
using CblasSgemm = void (*)(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A,
                            int lda, const float* B, int ldb, float beta, float* C, int ldc);

constexpr int kCblasRowMajor = 101;
constexpr int kCblasNoTrans = 111;
constexpr int kCblasTrans = 112;

struct HostBlas {
  CblasSgemm sgemm = nullptr;  // null: no usable BLAS, GEMM runs the portable loop
  const char* name = nullptr;  // "openblas", "blis", "mkl", "cblas"; null when none
};

// Looked up once: FUSED_ADAPTERS_BLAS (a library path, or "none"), else libopenblas, BLIS, MKL,
// then the system's libcblas / libblas (Debian's alternatives point it at OpenBLAS).
const HostBlas& hostBlas();

}  // namespace cpu
}  // namespace fa
