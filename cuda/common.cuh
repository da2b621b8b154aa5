// Shared by every .cu file: error checks that throw (never exit), dtype
// load/store to float, launch helpers.
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#include "../native/dtype.h"
#include "allocator.h"
#include "runtime.h"

namespace fa {
namespace cuda {

inline void check(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a sticky-free error so later calls can proceed
    throw std::runtime_error(std::string(op) + ": CUDA error in " + what + ": " + cudaGetErrorString(err));
  }
}

// Checks a kernel launch (configuration errors surface here; faults surface at the next sync).
inline void checkLaunch(const char* op) { check(cudaGetLastError(), op, "kernel launch"); }

// The device's stream, as the CUDA type.
inline cudaStream_t S(int dev) { return static_cast<cudaStream_t>(stream(dev)); }

// Scratch device memory from the caching allocator, returned at scope end. Reuse is
// ordered on the device's single stream, so freeing before the kernels finish is safe.
struct Scratch {
  int dev;
  size_t bytes;
  void* p;
  Scratch(int d, size_t n) : dev(d), bytes(n ? n : 1), p(deviceAlloc(d, bytes)) {}
  ~Scratch() { deviceFree(dev, p, bytes); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename U> U* as() const { return static_cast<U*>(p); }
};

// Sets the device for the calling thread for the scope of one op.
struct DeviceGuard {
  DeviceGuard(int dev, const char* op) { check(cudaSetDevice(dev), op, "cudaSetDevice"); }
};

inline unsigned blocksFor(size_t n, unsigned threads, unsigned cap = 65535u * 8u) {
  size_t b = (n + threads - 1) / threads;
  if (b == 0) b = 1;
  return unsigned(b > cap ? cap : b);
}

template <typename T> __device__ __forceinline__ float toF(T v);
template <> __device__ __forceinline__ float toF<float>(float v) { return v; }
template <> __device__ __forceinline__ float toF<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float toF<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float toF<int>(int v) { return float(v); }

template <typename T> __device__ __forceinline__ T fromF(float v);
template <> __device__ __forceinline__ float fromF<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half fromF<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ int fromF<int>(float v) { return int(v); }

// Calls f.template operator()<T>() with T the device type of dtype t.
template <typename F>
void dispatchFloat(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); break;
    case DType::BF16: f(__nv_bfloat16{}); break;
    case DType::F16: f(__half{}); break;
    case DType::I32: f(int{}); break;
  }
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace cuda
}  // namespace fa
