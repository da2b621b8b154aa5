#include <dlfcn.h>

#include <map>
#include <mutex>

#include "common.cuh"
#include "cublas.h"

namespace fa {
namespace cuda {

namespace {

// The few cuBLAS declarations used, with the values from cublas_api.h / library_types.h.
typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;              // CUBLAS_STATUS_SUCCESS == 0
enum { kOpN = 0, kOpT = 1 };            // cublasOperation_t
enum { kR32F = 0, kR16F = 2, kR16BF = 14 };  // cudaDataType
enum { kCompute32F = 68 };               // cublasComputeType_t
enum { kGemmDefault = -1 };              // cublasGemmAlgo_t

typedef cublasStatus_t (*CreateFn)(cublasHandle_t*);
typedef cublasStatus_t (*SetStreamFn)(cublasHandle_t, cudaStream_t);
typedef cublasStatus_t (*SetMathModeFn)(cublasHandle_t, int);
// cublasMath_t: default math, but partial sums of split-K reductions stay fp32 even when C is
// bf16/fp16 (DESIGN: accumulation is fp32).
enum { kMathDisallowReducedPrecisionReduction = 16 };
typedef cublasStatus_t (*GetVersionFn)(cublasHandle_t, int*);
typedef cublasStatus_t (*GemmStridedBatchedExFn)(cublasHandle_t, int, int, int, int, int, const void*, const void*,
                                                 int, int, long long, const void*, int, int, long long, const void*,
                                                 void*, int, int, long long, int, int, int);

struct Lib {
  bool tried = false, ok = false;
  std::string loaded, reason;
  CreateFn create = nullptr;
  SetStreamFn setStream = nullptr;
  SetMathModeFn setMathMode = nullptr;  // optional
  GetVersionFn getVersion = nullptr;
  GemmStridedBatchedExFn gemmStridedBatchedEx = nullptr;
};

std::mutex gMutex;
Lib gLib;
std::map<int, cublasHandle_t> gHandles;

void* openFirst(const char* const* names, std::string* which, std::string* errors) {
  for (const char* const* n = names; *n; n++) {
    void* h = dlopen(*n, RTLD_NOW | RTLD_GLOBAL);
    if (h) { *which = *n; return h; }
    const char* e = dlerror();
    *errors += std::string(errors->empty() ? "" : "; ") + (e ? e : *n);
  }
  return nullptr;
}

const char* statusName(cublasStatus_t s) {
  switch (s) {
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

cublasHandle_t handleFor(int dev, const char* op) {
  auto it = gHandles.find(dev);
  if (it != gHandles.end()) return it->second;
  cublasHandle_t h = nullptr;
  cublasStatus_t s = gLib.create(&h);
  if (s != 0) throw std::runtime_error(std::string(op) + ": cublasCreate failed: " + statusName(s));
  s = gLib.setStream(h, static_cast<cudaStream_t>(stream(dev)));
  if (s != 0) throw std::runtime_error(std::string(op) + ": cublasSetStream failed: " + statusName(s));
  if (gLib.setMathMode) {
    s = gLib.setMathMode(h, kMathDisallowReducedPrecisionReduction);
    if (s != 0) throw std::runtime_error(std::string(op) + ": cublasSetMathMode failed: " + statusName(s));
  }
  gHandles[dev] = h;
  return h;
}

}  // namespace

bool loadCublas(std::string* loaded, std::string* reason) {
  std::lock_guard<std::mutex> lock(gMutex);
  if (!gLib.tried) {
    gLib.tried = true;
    static const char* const ltNames[] = {"libcublasLt.so.13", "libcublasLt.so.12", nullptr};
    static const char* const names[] = {"libcublas.so.13", "libcublas.so.12", nullptr};
    std::string ltWhich, which, errors;
    void* lt = openFirst(ltNames, &ltWhich, &errors);
    void* h = lt ? openFirst(names, &which, &errors) : nullptr;
    if (!h) {
      gLib.reason = "cuBLAS could not be loaded (" + errors + ")";
    } else {
      gLib.create = reinterpret_cast<CreateFn>(dlsym(h, "cublasCreate_v2"));
      gLib.setStream = reinterpret_cast<SetStreamFn>(dlsym(h, "cublasSetStream_v2"));
      gLib.setMathMode = reinterpret_cast<SetMathModeFn>(dlsym(h, "cublasSetMathMode"));
      gLib.getVersion = reinterpret_cast<GetVersionFn>(dlsym(h, "cublasGetVersion_v2"));
      gLib.gemmStridedBatchedEx = reinterpret_cast<GemmStridedBatchedExFn>(dlsym(h, "cublasGemmStridedBatchedEx"));
      if (!gLib.create || !gLib.setStream || !gLib.gemmStridedBatchedEx) {
        gLib.reason = which + " lacks an entry point this build uses";
      } else {
        gLib.ok = true;
        gLib.loaded = which + " + " + ltWhich;
      }
    }
  }
  *loaded = gLib.loaded;
  *reason = gLib.reason;
  return gLib.ok;
}

void gemm(int dev, DType dt, bool transA, bool transB, int M, int N, int K, float alpha,
          const void* A, int lda, long long strideA, const void* B, int ldb, long long strideB,
          float beta, void* C, int ldc, long long strideC, int batch, const char* op) {
  gemmEx(dev, dt, dt, transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch,
         op);
}

namespace {

// C = beta * C (0 when beta is 0, whatever C held): the K = 0 product, done here because
// cuBLAS rejects the zero leading dimension of a row-major [M, 0] operand.
template <typename T>
__global__ void scaleCKernel(T* C, int M, int N, int ldc, long long strideC, int batch, float beta) {
  size_t total = size_t(batch) * size_t(M) * size_t(N);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    size_t n = i % size_t(N), t = i / size_t(N), m = t % size_t(M), b = t / size_t(M);
    T* c = C + b * size_t(strideC) + m * size_t(ldc) + n;
    *c = fromF<T>(beta == 0.0f ? 0.0f : beta * toF(*c));
  }
}

}  // namespace

static int cudaType(DType t) {
  return t == DType::F32 ? kR32F : t == DType::BF16 ? kR16BF : t == DType::F16 ? kR16F : -1;
}

void gemmEx(int dev, DType abType, DType cType, bool transA, bool transB, int M, int N, int K, float alpha,
            const void* A, int lda, long long strideA, const void* B, int ldb, long long strideB,
            float beta, void* C, int ldc, long long strideC, int batch, const char* op) {
  std::string loaded, reason;
  if (!loadCublas(&loaded, &reason)) throw std::runtime_error(std::string(op) + ": " + reason);
  int type = cudaType(abType), ctype = cudaType(cType);
  if (type < 0 || ctype < 0) throw std::runtime_error(std::string(op) + ": cuBLAS GEMM needs float dtypes");
  if (M == 0 || N == 0 || batch == 0) return;
  DeviceGuard guard(dev, op);
  if (K == 0) {
    size_t total = size_t(batch) * size_t(M) * size_t(N);
    dispatchFloat(cType, [&](auto tag) {
      using T = decltype(tag);
      scaleCKernel<T><<<blocksFor(total, 256), 256, 0, static_cast<cudaStream_t>(stream(dev))>>>(
          static_cast<T*>(C), M, N, ldc, strideC, batch, beta);
    });
    checkLaunch(op);
    return;
  }
  std::lock_guard<std::mutex> lock(gMutex);
  cublasHandle_t h = handleFor(dev, op);
  // cuBLAS is column-major: a row-major C (M x N) is a column-major C^T (N x M),
  // so compute C^T = op(B)^T * op(A)^T by swapping the operands.
  cublasStatus_t s = gLib.gemmStridedBatchedEx(h, transB ? kOpT : kOpN, transA ? kOpT : kOpN, N, M, K, &alpha,
                                               B, type, ldb, strideB, A, type, lda, strideA, &beta, C, ctype, ldc,
                                               strideC, batch, kCompute32F, kGemmDefault);
  if (s != 0) throw std::runtime_error(std::string(op) + ": cublasGemmStridedBatchedEx failed: " + statusName(s));
}

}  // namespace cuda
}  // namespace fa
