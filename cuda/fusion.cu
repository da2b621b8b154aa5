// AdapterFusion's attention on CUDA (definition in native/fusion.h): one warp per token, the A
// scores reduced across the warp in a fixed order, the softmax in registers, the weighted sum of
// the values one column per lane. Tested against the CPU op in test/gpu/.
#include "../native/philox.h"
#include "common.cuh"
#include "fusion.h"

namespace fa {
namespace cuda {

namespace {

constexpr unsigned kThreads = 256;
constexpr int kMaxA = int(kFusionMaxAdapters);

__device__ __forceinline__ bool keptScore(const FusionShape& s, size_t n, size_t i) {
  return philoxWord(s.seed, kFusionDropoutStream, n * s.A + i) >= dropoutThreshold(s.dropout);
}

template <typename T>
__global__ void fusionKernel(const T* q, const T* k, const T* v, T* out, float* probs, FusionShape s) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  const float keepScale = s.dropout > 0.0f ? 1.0f / (1.0f - s.dropout) : 1.0f;
  for (size_t n = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; n < s.N; n += nWarps) {
    float p[kMaxA];
    float top = -INFINITY;
    for (int i = 0; i < int(s.A); i++) {
      float part = 0.0f;
      for (size_t c = lane; c < s.H; c += 32) part += toF(q[n * s.H + c]) * toF(k[(n * s.A + i) * s.H + c]);
      float sc = warpSum(part);
      if (s.dropout > 0.0f) sc = keptScore(s, n, i) ? sc * keepScale : 0.0f;
      p[i] = sc / s.temperature;
      top = fmaxf(top, p[i]);
    }
    float sum = 0.0f;
    for (int i = 0; i < int(s.A); i++) sum += (p[i] = __expf(p[i] - top));
    for (int i = 0; i < int(s.A); i++) p[i] /= sum;
    if (lane == 0)
      for (int i = 0; i < int(s.A); i++) probs[n * s.A + i] = p[i];
    for (size_t c = lane; c < s.H; c += 32) {
      float o = 0.0f;
      for (int i = 0; i < int(s.A); i++) o += p[i] * toF(v[(n * s.A + i) * s.H + c]);
      out[n * s.H + c] = fromF<T>(o);
    }
  }
}

template <typename T>
__global__ void fusionBackwardKernel(const T* dOut, const T* q, const T* k, const T* v, const float* probs, T* dq, T* dk,
                                     T* dv, FusionShape s) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  const float keepScale = s.dropout > 0.0f ? 1.0f / (1.0f - s.dropout) : 1.0f;
  for (size_t n = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; n < s.N; n += nWarps) {
    float ds[kMaxA];
    float pg = 0.0f;
    for (int i = 0; i < int(s.A); i++) {
      float part = 0.0f;
      for (size_t c = lane; c < s.H; c += 32) part += toF(dOut[n * s.H + c]) * toF(v[(n * s.A + i) * s.H + c]);
      ds[i] = warpSum(part);  // g_i for now
      pg += probs[n * s.A + i] * ds[i];
    }
    for (int i = 0; i < int(s.A); i++) {
      float p = probs[n * s.A + i];
      float d = p * (ds[i] - pg) / s.temperature;
      if (s.dropout > 0.0f) d = keptScore(s, n, i) ? d * keepScale : 0.0f;
      ds[i] = d;
    }
    for (size_t c = lane; c < s.H; c += 32) {
      float d = toF(dOut[n * s.H + c]), qc = toF(q[n * s.H + c]), acc = 0.0f;
      for (int i = 0; i < int(s.A); i++) {
        size_t at = (n * s.A + i) * s.H + c;
        dv[at] = fromF<T>(probs[n * s.A + i] * d);
        dk[at] = fromF<T>(ds[i] * qc);
        acc += ds[i] * toF(k[at]);
      }
      dq[n * s.H + c] = fromF<T>(acc);
    }
  }
}

}  // namespace

void fusionAttention(int dev, DType t, const void* q, const void* k, const void* v, void* out, float* probs,
                     const FusionShape& s) {
  if (!s.N || !s.A || !s.H) return;
  DeviceGuard g(dev, "fusionAttention");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    fusionKernel<T><<<blocksFor(s.N * 32, kThreads), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(out), probs, s);
  });
  checkLaunch("fusionAttention");
}

void fusionAttentionBackward(int dev, DType t, const void* dOut, const void* q, const void* k, const void* v,
                             const float* probs, void* dq, void* dk, void* dv, const FusionShape& s) {
  if (!s.N || !s.A || !s.H) return;
  DeviceGuard g(dev, "fusionAttentionBackward");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    fusionBackwardKernel<T><<<blocksFor(s.N * 32, kThreads), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(dOut), static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), probs,
        static_cast<T*>(dq), static_cast<T*>(dk), static_cast<T*>(dv), s);
  });
  checkLaunch("fusionAttentionBackward");
}

}  // namespace cuda
}  // namespace fa
