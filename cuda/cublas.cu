#include <dlfcn.h>

#include <map>
#include <mutex>

#include <type_traits>

#include "common.cuh"
#include "cublas.h"

#ifdef FA_HAVE_CUBLAS_HEADERS
// Declarations only (nothing is linked): used below to check the hand-written prototypes.
#include <cublas_v2.h>
#else
struct cublasContext;  // at global scope, as cublas_api.h declares it
#endif

namespace fa {
namespace cuda {

namespace {

// The few cuBLAS declarations used, with the values from cublas_api.h / library_types.h.
typedef ::cublasContext* Handle;   // cublasHandle_t
typedef int Status;                 // cublasStatus_t: CUBLAS_STATUS_SUCCESS == 0
enum { kOpN = 0, kOpT = 1 };            // cublasOperation_t
enum { kR32F = 0, kR16F = 2, kR16BF = 14 };  // cudaDataType
enum { kCompute32F = 68 };               // cublasComputeType_t
enum { kGemmDefault = -1 };              // cublasGemmAlgo_t

typedef Status (*CreateFn)(Handle*);
typedef Status (*SetStreamFn)(Handle, cudaStream_t);
typedef Status (*SetMathModeFn)(Handle, int);
// cublasMath_t: default math, but partial sums of split-K reductions stay fp32 even when C is
// bf16/fp16 (DESIGN: accumulation is fp32).
enum { kMathDisallowReducedPrecisionReduction = 16 };
typedef Status (*GetVersionFn)(Handle, int*);
typedef Status (*GemmStridedBatchedExFn)(Handle, int, int, int, int, int, const void*, const void*,
                                                 int, int, long long, const void*, int, int, long long, const void*,
                                                 void*, int, int, long long, int, int, int);

#ifdef FA_HAVE_CUBLAS_HEADERS
// The loader's types must be NVIDIA's up to enums passed as their underlying int: each real
// entry point converts to its expected prototype (so the header has it), and that prototype
// with enums replaced by int is exactly the one dlsym's result is cast to.
template <typename T, bool = std::is_enum<T>::value> struct AsAbi { using type = T; };
template <typename T> struct AsAbi<T, true> { using type = int; };
template <typename F> struct AbiOf;
template <typename R, typename... A> struct AbiOf<R (*)(A...)> {
  using type = typename AsAbi<R>::type (*)(typename AsAbi<A>::type...);
};
template <typename Real, typename Ours> constexpr bool sameAbi() {
  return std::is_same<typename AbiOf<Real>::type, Ours>::value;
}
using RealCreate = ::cublasStatus_t (*)(::cublasHandle_t*);
using RealSetStream = ::cublasStatus_t (*)(::cublasHandle_t, cudaStream_t);
using RealSetMathMode = ::cublasStatus_t (*)(::cublasHandle_t, ::cublasMath_t);
using RealGetVersion = ::cublasStatus_t (*)(::cublasHandle_t, int*);
using RealGemmStridedBatchedEx = ::cublasStatus_t (*)(
    ::cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*, cudaDataType, int,
    long long, const void*, cudaDataType, int, long long, const void*, void*, cudaDataType, int, long long, int,
    cublasComputeType_t, cublasGemmAlgo_t);
[[maybe_unused]] constexpr RealCreate kRealCreate = &::cublasCreate_v2;
[[maybe_unused]] constexpr RealSetStream kRealSetStream = &::cublasSetStream_v2;
[[maybe_unused]] constexpr RealSetMathMode kRealSetMathMode = &::cublasSetMathMode;
[[maybe_unused]] constexpr RealGetVersion kRealGetVersion = &::cublasGetVersion_v2;
[[maybe_unused]] constexpr RealGemmStridedBatchedEx kRealGemm = &::cublasGemmStridedBatchedEx;
static_assert(sameAbi<RealCreate, CreateFn>(), "cublasCreate_v2 prototype");
static_assert(sameAbi<RealSetStream, SetStreamFn>(), "cublasSetStream_v2 prototype");
static_assert(sameAbi<RealSetMathMode, SetMathModeFn>(), "cublasSetMathMode prototype");
static_assert(sameAbi<RealGetVersion, GetVersionFn>(), "cublasGetVersion_v2 prototype");
static_assert(sameAbi<RealGemmStridedBatchedEx, GemmStridedBatchedExFn>(), "cublasGemmStridedBatchedEx prototype");
static_assert(sizeof(::cublasStatus_t) == sizeof(int) && int(CUBLAS_STATUS_SUCCESS) == 0, "cublasStatus_t");
static_assert(int(CUBLAS_OP_N) == kOpN && int(CUBLAS_OP_T) == kOpT, "cublasOperation_t values");
static_assert(int(CUDA_R_32F) == kR32F && int(CUDA_R_16F) == kR16F && int(CUDA_R_16BF) == kR16BF, "cudaDataType values");
static_assert(int(CUBLAS_COMPUTE_32F) == kCompute32F && int(CUBLAS_GEMM_DEFAULT) == kGemmDefault, "compute and algo values");
static_assert(int(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) == kMathDisallowReducedPrecisionReduction,
              "cublasMath_t value");
static_assert(int(CUBLAS_STATUS_NOT_INITIALIZED) == 1 && int(CUBLAS_STATUS_ALLOC_FAILED) == 3 &&
                  int(CUBLAS_STATUS_INVALID_VALUE) == 7 && int(CUBLAS_STATUS_ARCH_MISMATCH) == 8 &&
                  int(CUBLAS_STATUS_MAPPING_ERROR) == 11 && int(CUBLAS_STATUS_EXECUTION_FAILED) == 13 &&
                  int(CUBLAS_STATUS_INTERNAL_ERROR) == 14 && int(CUBLAS_STATUS_NOT_SUPPORTED) == 15,
              "cublasStatus_t values named in errors");
#endif

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
std::map<int, Handle> gHandles;

void* openFirst(const char* const* names, std::string* which, std::string* errors) {
  for (const char* const* n = names; *n; n++) {
    void* h = dlopen(*n, RTLD_NOW | RTLD_GLOBAL);
    if (h) { *which = *n; return h; }
    const char* e = dlerror();
    *errors += std::string(errors->empty() ? "" : "; ") + (e ? e : *n);
  }
  return nullptr;
}

const char* statusName(Status s) {
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

Handle handleFor(int dev, const char* op) {
  auto it = gHandles.find(dev);
  if (it != gHandles.end()) return it->second;
  Handle h = nullptr;
  Status s = gLib.create(&h);
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
  Handle h = handleFor(dev, op);
  // cuBLAS is column-major: a row-major C (M x N) is a column-major C^T (N x M),
  // so compute C^T = op(B)^T * op(A)^T by swapping the operands.
  Status s = gLib.gemmStridedBatchedEx(h, transB ? kOpT : kOpN, transA ? kOpT : kOpN, N, M, K, &alpha,
                                               B, type, ldb, strideB, A, type, lda, strideA, &beta, C, ctype, ldc,
                                               strideC, batch, kCompute32F, kGemmDefault);
  if (s != 0) throw std::runtime_error(std::string(op) + ": cublasGemmStridedBatchedEx failed: " + statusName(s));
}

}  // namespace cuda
}  // namespace fa
