#include "../native/philox.h"
#include "basic.h"
#include "common.cuh"

namespace fa {
namespace cuda {

namespace {

constexpr unsigned kThreads = 256;

template <typename T>
__global__ void addKernel(const T* a, const T* b, T* out, size_t n, size_t nb, float alpha) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(toF(a[i]) + alpha * toF(b[i % nb]));
}

template <typename T>
__global__ void mulKernel(const T* a, const T* b, T* out, size_t n, size_t nb) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(toF(a[i]) * toF(b[i % nb]));
}

template <typename T>
__global__ void scaleKernel(const T* a, T* out, size_t n, float s) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(s * toF(a[i]));
}

template <typename S, typename D>
__global__ void castKernel(const S* src, D* dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = fromF<D>(toF(src[i]));
}

__global__ void castIntKernel(const int* src, int* dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

template <typename T>
__global__ void fillKernel(T* out, size_t n, float v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(v);
}

// Same per-element formula as cpu::randomFill, so both backends draw the same numbers.
template <typename T>
__global__ void randomKernel(T* out, size_t n, uint64_t seed, bool normal, float a, float b) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float v;
    if (normal) {
      uint64_t p = i >> 1;
      float u1 = uintToUnit(philoxWord(seed, 0, 2 * p));
      float u2 = uintToUnit(philoxWord(seed, 0, 2 * p + 1));
      float r = sqrtf(-2.0f * logf(u1));
      float th = 6.283185307179586f * u2;
      v = a + b * ((i & 1) ? r * sinf(th) : r * cosf(th));
    } else {
      // No contraction into an FMA: the CPU rounds the product, then the sum.
      v = __fadd_rn(a, __fmul_rn(b - a, uintToUnit(philoxWord(seed, 0, i))));
    }
    out[i] = fromF<T>(v);
  }
}

template <typename T>
__global__ void activationKernel(const T* x, T* out, size_t n, Act act) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(actForward(act, toF(x[i])));
}

template <typename T>
__global__ void activationGradKernel(const T* x, const T* dy, T* out, size_t n, Act act) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(toF(dy[i]) * actGrad(act, toF(x[i])));
}

// One warp per row, rows looped over by a grid stride.
template <typename T>
__global__ void rowSumKernel(const T* x, T* out, size_t rows, size_t cols) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    const T* row = x + r * cols;
    float s = 0.0f;
    for (size_t c = lane; c < cols; c += 32) s += toF(row[c]);
    s = warpSum(s);
    if (lane == 0) out[r] = fromF<T>(s);
  }
}

// One thread per column, block of 32 columns x 8 row-strips reduced in shared memory:
// deterministic (fixed order), coalesced across the columns.
template <typename T>
__global__ void colSumKernel(const T* x, T* out, size_t rows, size_t cols) {
  __shared__ float part[8][33];
  size_t c = blockIdx.x * size_t(32) + threadIdx.x;
  float s = 0.0f;
  if (c < cols)
    for (size_t r = threadIdx.y; r < rows; r += 8) s += toF(x[r * cols + c]);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.0f;
    for (int k = 0; k < 8; k++) t += part[k][threadIdx.x];
    out[c] = fromF<T>(t);
  }
}


}  // namespace

void add(int dev, DType t, const void* a, const void* b, void* out, size_t n, size_t nb, float alpha) {
  if (!n) return;
  DeviceGuard g(dev, "add");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    addKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<const T*>(a), static_cast<const T*>(b),
                                                                 static_cast<T*>(out), n, nb, alpha);
  });
  checkLaunch("add");
}

void mul(int dev, DType t, const void* a, const void* b, void* out, size_t n, size_t nb) {
  if (!n) return;
  DeviceGuard g(dev, "mul");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    mulKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<const T*>(a), static_cast<const T*>(b),
                                                                 static_cast<T*>(out), n, nb);
  });
  checkLaunch("mul");
}

void scale(int dev, DType t, const void* a, void* out, size_t n, float s) {
  if (!n) return;
  DeviceGuard g(dev, "scale");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    scaleKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<const T*>(a), static_cast<T*>(out), n, s);
  });
  checkLaunch("scale");
}

void cast(int dev, DType from, const void* src, DType to, void* dst, size_t n) {
  if (!n) return;
  DeviceGuard g(dev, "cast");
  if (from == DType::I32 && to == DType::I32) {
    castIntKernel<<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<const int*>(src), static_cast<int*>(dst), n);
  } else {
    dispatchFloat(from, [&](auto s) {
      using Src = decltype(s);
      dispatchFloat(to, [&](auto d) {
        using Dst = decltype(d);
        castKernel<Src, Dst><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<const Src*>(src),
                                                                             static_cast<Dst*>(dst), n);
      });
    });
  }
  checkLaunch("cast");
}

void fill(int dev, DType t, void* out, size_t n, float v) {
  if (!n) return;
  DeviceGuard g(dev, "fill");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    fillKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<T*>(out), n, v);
  });
  checkLaunch("fill");
}

void randomFill(int dev, DType t, void* out, size_t n, uint64_t seed, bool normal, float a, float b) {
  if (!n) return;
  DeviceGuard g(dev, "randomFill");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    randomKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<T*>(out), n, seed, normal, a, b);
  });
  checkLaunch("randomFill");
}

void activation(int dev, DType t, const void* x, void* out, size_t n, Act act) {
  if (!n) return;
  DeviceGuard g(dev, "activation");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    activationKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<const T*>(x), static_cast<T*>(out), n, act);
  });
  checkLaunch("activation");
}

void activationGrad(int dev, DType t, const void* x, const void* dy, void* out, size_t n, Act act) {
  if (!n) return;
  DeviceGuard g(dev, "activationGrad");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    activationGradKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(out), n, act);
  });
  checkLaunch("activationGrad");
}

void rowSum(int dev, DType t, const void* x, void* out, size_t rows, size_t cols) {
  if (!rows) return;
  DeviceGuard g(dev, "rowSum");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    rowSumKernel<T><<<blocksFor(rows * 32, kThreads), kThreads, 0, S(dev)>>>(static_cast<const T*>(x),
                                                                          static_cast<T*>(out), rows, cols);
  });
  checkLaunch("rowSum");
}

void colSum(int dev, DType t, const void* x, void* out, size_t rows, size_t cols) {
  if (!cols) return;
  DeviceGuard g(dev, "colSum");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    colSumKernel<T><<<unsigned((cols + 31) / 32), dim3(32, 8), 0, S(dev)>>>(static_cast<const T*>(x),
                                                                           static_cast<T*>(out), rows, cols);
  });
  checkLaunch("colSum");
}

}  // namespace cuda
}  // namespace fa
