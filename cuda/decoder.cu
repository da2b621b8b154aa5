// RMSNorm and rotary embeddings on CUDA: the meaning of each function is its CPU reference
// in native/cpu/decoder.cc. Row ops run one warp per row (fp32, shuffles in a fixed order);
// dWeight goes through per-chunk partials summed in chunk order, so results never depend on
// scheduling.
#include <algorithm>

#include "../native/activation.h"
#include "allocator.h"
#include "common.cuh"
#include "decoder.h"

namespace fa {
namespace cuda {

namespace {

constexpr unsigned kThreads = 256;

unsigned warpBlocks(size_t rows) { return blocksFor(rows * 32, kThreads); }

template <typename T>
__device__ __forceinline__ float roundTo(float v) {
  return toF(fromF<T>(v));
}

template <typename T>
__global__ void rmsNormKernel(const T* x, const T* w, T* out, float* rstd, size_t rows, size_t H, float eps) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    size_t base = r * H;
    float q = 0.0f;
    for (size_t c = lane; c < H; c += 32) {
      float v = toF(x[base + c]);
      q += v * v;
    }
    float rs = rsqrtf(warpSum(q) / float(H) + eps);
    for (size_t c = lane; c < H; c += 32) out[base + c] = fromF<T>(toF(w[c]) * roundTo<T>(toF(x[base + c]) * rs));
    if (lane == 0) rstd[r] = rs;
  }
}

// dx = rstd · (g − x̂ · mean(g ⊙ x̂)), g = dOut ⊙ w; one warp per row.
template <typename T>
__global__ void rmsNormDxKernel(const T* dOut, const T* x, const T* w, const float* rstd, T* dx, size_t rows,
                                size_t H) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    size_t base = r * H;
    float rs = rstd[r];
    float sgx = 0.0f;
    for (size_t c = lane; c < H; c += 32) sgx += toF(dOut[base + c]) * toF(w[c]) * (toF(x[base + c]) * rs);
    float m = warpSum(sgx) / float(H);
    for (size_t c = lane; c < H; c += 32) {
      float xh = toF(x[base + c]) * rs;
      dx[base + c] = fromF<T>(rs * (toF(dOut[base + c]) * toF(w[c]) - xh * m));
    }
  }
}

// Partials of dWeight = Σ dOut ⊙ x̂ over the row chunk blockIdx.y: 32 columns x 8 row strips
// per block, strips combined in a fixed order.
template <typename T>
__global__ void rmsNormParamPartialKernel(const T* dOut, const T* x, const float* rstd, float* part, size_t rows,
                                          size_t H, size_t chunk) {
  __shared__ float sw[8][33];
  size_t c = blockIdx.x * size_t(32) + threadIdx.x;
  size_t r0 = blockIdx.y * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
  float a = 0.0f;
  if (c < H)
    for (size_t r = r0 + threadIdx.y; r < r1; r += 8) a += toF(dOut[r * H + c]) * roundTo<T>(toF(x[r * H + c]) * rstd[r]);
  sw[threadIdx.y][threadIdx.x] = a;
  __syncthreads();
  if (threadIdx.y == 0 && c < H) {
    float t = 0.0f;
    for (int k = 0; k < 8; k++) t += sw[k][threadIdx.x];
    part[blockIdx.y * H + c] = t;
  }
}

__global__ void sumChunksKernel(const float* part, float* out, size_t chunks, size_t H) {
  for (size_t c = blockIdx.x * size_t(blockDim.x) + threadIdx.x; c < H; c += size_t(gridDim.x) * blockDim.x) {
    float t = 0.0f;
    for (size_t k = 0; k < chunks; k++) t += part[k * H + c];
    out[c] = t;
  }
}

// One thread per (token, head, i < rot/2): rotates the pair (i, i + rot/2); dims past rot are copied.
template <typename T>
__global__ void ropeKernel(const T* x, const int32_t* pos, const float* invFreq, T* out, size_t tokens, size_t heads,
                           size_t D, size_t rot, bool inverse) {
  size_t half = rot / 2, pass = D - rot;
  size_t per = half + pass;  // work items per (token, head)
  size_t total = tokens * heads * per;
  for (size_t k = blockIdx.x * size_t(blockDim.x) + threadIdx.x; k < total; k += size_t(gridDim.x) * blockDim.x) {
    size_t i = k % per, th = k / per, tok = th / heads;
    size_t base = th * D;
    if (i >= half) {  // a dimension that does not rotate
      size_t d = rot + (i - half);
      out[base + d] = x[base + d];
      continue;
    }
    float a = float(pos[tok]) * invFreq[i];
    float c = roundTo<T>(cosf(a)), s = roundTo<T>(inverse ? -sinf(a) : sinf(a));
    float u = toF(x[base + i]), v = toF(x[base + i + half]);
    out[base + i] = fromF<T>(u * c - v * s);
    out[base + i + half] = fromF<T>(v * c + u * s);
  }
}

template <typename T>
__global__ void gatedKernel(const T* gate, const T* up, T* out, size_t n, Act act) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = fromF<T>(actForward(act, toF(gate[i])) * toF(up[i]));
}

template <typename T>
__global__ void gatedBackwardKernel(const T* dOut, const T* gate, const T* up, T* dGate, T* dUp, size_t n, Act act) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float d = toF(dOut[i]), g = toF(gate[i]), u = toF(up[i]);
    dGate[i] = fromF<T>(d * u * actGrad(act, g));
    dUp[i] = fromF<T>(d * actForward(act, g));
  }
}

}  // namespace

void cacheWrite(int dev, void* dst, const void* src, size_t outer, size_t rows, size_t n, size_t rowBytes, size_t offset) {
  if (!outer || !n || !rowBytes) return;
  DeviceGuard g(dev, "cacheWrite");
  // one strided copy: `outer` blocks of n rows, into blocks of `rows` rows at row `offset`
  check(cudaMemcpy2DAsync(static_cast<char*>(dst) + offset * rowBytes, rows * rowBytes, src, n * rowBytes, n * rowBytes, outer,
                          cudaMemcpyDeviceToDevice, S(dev)),
        "cacheWrite", "cudaMemcpy2DAsync");
}

void gatedActivation(int dev, DType t, const void* gate, const void* up, void* out, size_t n, int act) {
  if (!n) return;
  DeviceGuard g(dev, "gatedActivation");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    gatedKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(static_cast<const T*>(gate), static_cast<const T*>(up),
                                                                    static_cast<T*>(out), n, Act(act));
  });
  checkLaunch("gatedActivation");
}

void gatedActivationBackward(int dev, DType t, const void* dOut, const void* gate, const void* up, void* dGate,
                             void* dUp, size_t n, int act) {
  if (!n) return;
  DeviceGuard g(dev, "gatedActivationBackward");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    gatedBackwardKernel<T><<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(dOut), static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(dGate),
        static_cast<T*>(dUp), n, Act(act));
  });
  checkLaunch("gatedActivationBackward");
}

void rmsNorm(int dev, DType t, const void* x, const void* weight, void* out, float* rstd, size_t rows, size_t H,
             float eps) {
  if (!rows || !H) return;
  DeviceGuard g(dev, "rmsNorm");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    rmsNormKernel<T><<<warpBlocks(rows), kThreads, 0, S(dev)>>>(static_cast<const T*>(x), static_cast<const T*>(weight),
                                                                static_cast<T*>(out), rstd, rows, H, eps);
  });
  checkLaunch("rmsNorm");
}

void rmsNormBackward(int dev, DType t, const void* dOut, const void* x, const void* weight, const float* rstd,
                     void* dx, float* dWeight, size_t rows, size_t H) {
  if (!H) return;
  const char* op = "rmsNormBackward";
  DeviceGuard g(dev, op);
  if (!rows) {
    check(cudaMemsetAsync(dWeight, 0, H * 4, S(dev)), op, "cudaMemsetAsync");
    return;
  }
  size_t chunks = std::min<size_t>(256, (rows + 31) / 32);
  size_t chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + chunk - 1) / chunk;
  Scratch part(dev, chunks * H * sizeof(float));
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    const T* d = static_cast<const T*>(dOut);
    const T* xx = static_cast<const T*>(x);
    rmsNormDxKernel<T><<<warpBlocks(rows), kThreads, 0, S(dev)>>>(d, xx, static_cast<const T*>(weight), rstd,
                                                                  static_cast<T*>(dx), rows, H);
    checkLaunch(op);
    dim3 grid(unsigned((H + 31) / 32), unsigned(chunks));
    rmsNormParamPartialKernel<T><<<grid, dim3(32, 8), 0, S(dev)>>>(d, xx, rstd, part.as<float>(), rows, H, chunk);
    checkLaunch(op);
  });
  sumChunksKernel<<<blocksFor(H, kThreads), kThreads, 0, S(dev)>>>(part.as<float>(), dWeight, chunks, H);
  checkLaunch(op);
}

void rope(int dev, DType t, const void* x, const int32_t* pos, const float* invFreq, void* out, size_t tokens,
          size_t heads, size_t D, size_t rot, bool inverse) {
  size_t total = tokens * heads * (rot / 2 + D - rot);
  if (!total) return;
  DeviceGuard g(dev, "rope");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    ropeKernel<T><<<blocksFor(total, kThreads), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(x), pos, invFreq, static_cast<T*>(out), tokens, heads, D, rot, inverse);
  });
  checkLaunch("rope");
}

}  // namespace cuda
}  // namespace fa
