// Multi-tensor optimizer kernels: AdamW, sum of squares and in-place scaling over a list of
// tensors in one launch each. The host cuts every tensor into kOptimChunk-element chunks and
// uploads one table (tensor descriptors, then the chunk list); block b takes chunks b,
// b + gridDim.x, ... so any number of tensors of any sizes is one launch.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "allocator.h"
#include "common.cuh"
#include "optim.h"

namespace fa {
namespace cuda {

namespace {

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = size_t(1) << 20;

// One chunk: elements [begin, begin + len) of tensor `tensor`.
struct DevChunk {
  uint32_t tensor;
  uint32_t len;
  uint64_t begin;
};



size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// The descriptor table on the device: tensors at 0, chunks at chunkOff, then `extraUpload`
// zero bytes uploaded with it (a counter), then `extraScratch` bytes left uninitialised.
template <typename T>
struct Table {
  Scratch mem;
  size_t nChunks = 0, chunkOff = 0, extraOff = 0;
  const T* tensors() const { return static_cast<const T*>(mem.p); }
  const DevChunk* chunks() const {
    return reinterpret_cast<const DevChunk*>(static_cast<const char*>(mem.p) + chunkOff);
  }
  char* extra() const { return static_cast<char*>(mem.p) + extraOff; }

  Table(int dev, const T* ts, size_t count, size_t nChunksIn, size_t extraUpload, size_t extraScratch, const char* op)
      : mem(dev, tableBytes(count, nChunksIn, extraUpload, extraScratch)) {
    nChunks = nChunksIn;
    chunkOff = align16(count * sizeof(T));
    extraOff = align16(chunkOff + nChunks * sizeof(DevChunk));
    std::vector<unsigned char> host(extraOff + extraUpload, 0);
    std::memcpy(host.data(), ts, count * sizeof(T));
    DevChunk* ch = reinterpret_cast<DevChunk*>(host.data() + chunkOff);
    size_t k = 0;
    for (size_t i = 0; i < count; i++)
      for (size_t b = 0; b < ts[i].n; b += kOptimChunk)
        ch[k++] = DevChunk{uint32_t(i), uint32_t(std::min(kOptimChunk, ts[i].n - b)), uint64_t(b)};
    copyHostToDevice(dev, mem.p, host.data(), host.size(), op);
  }

  static size_t tableBytes(size_t count, size_t nChunks, size_t extraUpload, size_t extraScratch) {
    return align16(align16(count * sizeof(T)) + nChunks * sizeof(DevChunk)) + extraUpload + extraScratch;
  }
};

template <typename T>
size_t countChunks(const T* ts, size_t count) {
  size_t c = 0;
  for (size_t i = 0; i < count; i++) c += (ts[i].n + kOptimChunk - 1) / kOptimChunk;
  return c;
}

unsigned gridFor(size_t nChunks) { return unsigned(std::min(nChunks, kMaxBlocks)); }

__device__ __forceinline__ bool aligned16(const void* a, const void* b, const void* c, const void* d) {
  return ((uintptr_t(a) | uintptr_t(b) | uintptr_t(c) | uintptr_t(d)) & 15u) == 0;
}

// ---- AdamW ----

// torch's single-tensor AdamW for one element, every operation rounded to fp32 (no FMA), the
// same sequence as cpu::adamwStep: w is the fp32 weight (master or fp32 param).
__device__ __forceinline__ void adamwElement(float& w, float& m, float& v, float g, float decay, float stepSize,
                                             float bc2Sqrt, const AdamWConsts& c) {
  float p = __fmul_rn(w, decay);
  m = __fadd_rn(__fmul_rn(m, c.beta1), __fmul_rn(c.oneMinusBeta1, g));
  v = __fadd_rn(__fmul_rn(v, c.beta2), __fmul_rn(__fmul_rn(c.oneMinusBeta2, g), g));
  float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bc2Sqrt), c.eps);
  w = __fadd_rn(p, __fdiv_rn(__fmul_rn(stepSize, m), denom));
}

template <typename P, typename G>
__device__ void adamwChunk(const AdamWTensor& t, size_t begin, unsigned len, const AdamWConsts& c) {
  const G* g = static_cast<const G*>(t.grad) + begin;
  float* m = t.expAvg + begin;
  float* v = t.expAvgSq + begin;
  P* p = static_cast<P*>(t.param) + begin;
  float* w;
  if constexpr (std::is_same<P, float>::value) w = t.master ? t.master + begin : p;
  else w = t.master + begin;  // the binding requires a master for low-precision params
  const float decay = t.decay, stepSize = t.stepSize, bc2Sqrt = t.bc2Sqrt;
  unsigned start = 0;
  if constexpr (std::is_same<P, float>::value && std::is_same<G, float>::value) {
    if (aligned16(w, g, m, v)) {  // 128-bit loads and stores
      unsigned n4 = len / 4;
      for (unsigned i = threadIdx.x; i < n4; i += blockDim.x) {
        float4 W = reinterpret_cast<float4*>(w)[i];
        float4 M = reinterpret_cast<float4*>(m)[i];
        float4 V = reinterpret_cast<float4*>(v)[i];
        float4 Gv = reinterpret_cast<const float4*>(g)[i];
        adamwElement(W.x, M.x, V.x, Gv.x, decay, stepSize, bc2Sqrt, c);
        adamwElement(W.y, M.y, V.y, Gv.y, decay, stepSize, bc2Sqrt, c);
        adamwElement(W.z, M.z, V.z, Gv.z, decay, stepSize, bc2Sqrt, c);
        adamwElement(W.w, M.w, V.w, Gv.w, decay, stepSize, bc2Sqrt, c);
        reinterpret_cast<float4*>(w)[i] = W;
        reinterpret_cast<float4*>(m)[i] = M;
        reinterpret_cast<float4*>(v)[i] = V;
      }
      start = n4 * 4;
    }
  }
  for (unsigned i = start + threadIdx.x; i < len; i += blockDim.x) {
    float wi = w[i], mi = m[i], vi = v[i];
    adamwElement(wi, mi, vi, toF(g[i]), decay, stepSize, bc2Sqrt, c);
    m[i] = mi;
    v[i] = vi;
    w[i] = wi;
    if constexpr (!std::is_same<P, float>::value) p[i] = fromF<P>(wi);
  }
}

template <typename P>
__device__ void adamwChunkP(const AdamWTensor& t, size_t begin, unsigned len, const AdamWConsts& c) {
  switch (t.gradType) {
    case DType::BF16: adamwChunk<P, __nv_bfloat16>(t, begin, len, c); break;
    case DType::F16: adamwChunk<P, __half>(t, begin, len, c); break;
    default: adamwChunk<P, float>(t, begin, len, c); break;
  }
}

__global__ void __launch_bounds__(kThreads) adamwKernel(const AdamWTensor* ts, const DevChunk* chunks, size_t nChunks,
                                                        AdamWConsts c) {
  for (size_t k = blockIdx.x; k < nChunks; k += gridDim.x) {
    const DevChunk ch = chunks[k];
    const AdamWTensor t = ts[ch.tensor];
    switch (t.paramType) {
      case DType::BF16: adamwChunkP<__nv_bfloat16>(t, ch.begin, ch.len, c); break;
      case DType::F16: adamwChunkP<__half>(t, ch.begin, ch.len, c); break;
      default: adamwChunkP<float>(t, ch.begin, ch.len, c); break;
    }
  }
}

// ---- sum of squares ----

__device__ __forceinline__ double warpSumD(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block in a fixed order; the result is valid in thread 0. sh: 32 doubles.
__device__ double blockSumD(double v, double* sh) {
  v = warpSumD(v);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  double r = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); w++) r += sh[w];
  __syncthreads();  // sh may be reused
  return r;
}

// This thread's share of a chunk: fp32 squares (summed in fp32 four at a time) into double.
template <typename T>
__device__ double chunkSumSq(const void* data, size_t begin, unsigned len) {
  const T* x = static_cast<const T*>(data) + begin;
  double s = 0.0;
  unsigned start = 0;
  if constexpr (std::is_same<T, float>::value) {
    if ((uintptr_t(x) & 15u) == 0) {
      unsigned n4 = len / 4;
      for (unsigned i = threadIdx.x; i < n4; i += blockDim.x) {
        float4 v = reinterpret_cast<const float4*>(x)[i];
        s += double((v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w));
      }
      start = n4 * 4;
    }
  }
  for (unsigned i = start + threadIdx.x; i < len; i += blockDim.x) {
    float v = toF(x[i]);
    s += double(v * v);
  }
  return s;
}

// Each chunk's partial is computed by one block in a fixed order, whichever block it is;
// the last block to finish (atomic counter) totals the partials in chunk order.
__global__ void __launch_bounds__(kThreads) sumSqKernel(const NormTensor* ts, const DevChunk* chunks, size_t nChunks,
                                                        double* partial, unsigned* counter, double* result) {
  __shared__ double sh[32];
  __shared__ bool isLast;
  for (size_t k = blockIdx.x; k < nChunks; k += gridDim.x) {
    const DevChunk ch = chunks[k];
    const NormTensor t = ts[ch.tensor];
    double s;
    switch (t.dtype) {
      case DType::BF16: s = chunkSumSq<__nv_bfloat16>(t.data, ch.begin, ch.len); break;
      case DType::F16: s = chunkSumSq<__half>(t.data, ch.begin, ch.len); break;
      default: s = chunkSumSq<float>(t.data, ch.begin, ch.len); break;
    }
    s = blockSumD(s, sh);
    if (threadIdx.x == 0) partial[k] = s;
  }
  if (threadIdx.x == 0) {
    __threadfence();  // this block's partials are visible before it is counted
    isLast = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!isLast) return;
  __threadfence();
  // Fixed order: thread i sums partials i, i + blockDim.x, ...; then the block in order.
  double d = 0.0;
  for (size_t k = threadIdx.x; k < nChunks; k += blockDim.x) d += __ldcg(partial + k);
  d = blockSumD(d, sh);
  if (threadIdx.x == 0) *result = d;
}

// ---- scale ----

template <typename T>
__device__ void scaleChunk(void* data, size_t begin, unsigned len, float s) {
  T* x = static_cast<T*>(data) + begin;
  unsigned start = 0;
  if constexpr (std::is_same<T, float>::value) {
    if ((uintptr_t(x) & 15u) == 0) {
      unsigned n4 = len / 4;
      for (unsigned i = threadIdx.x; i < n4; i += blockDim.x) {
        float4 v = reinterpret_cast<float4*>(x)[i];
        v.x = __fmul_rn(v.x, s);
        v.y = __fmul_rn(v.y, s);
        v.z = __fmul_rn(v.z, s);
        v.w = __fmul_rn(v.w, s);
        reinterpret_cast<float4*>(x)[i] = v;
      }
      start = n4 * 4;
    }
  }
  for (unsigned i = start + threadIdx.x; i < len; i += blockDim.x) x[i] = fromF<T>(__fmul_rn(toF(x[i]), s));
}

__global__ void __launch_bounds__(kThreads) scaleKernel(const NormTensor* ts, const DevChunk* chunks, size_t nChunks,
                                                        float s) {
  for (size_t k = blockIdx.x; k < nChunks; k += gridDim.x) {
    const DevChunk ch = chunks[k];
    const NormTensor t = ts[ch.tensor];
    switch (t.dtype) {
      case DType::BF16: scaleChunk<__nv_bfloat16>(t.data, ch.begin, ch.len, s); break;
      case DType::F16: scaleChunk<__half>(t.data, ch.begin, ch.len, s); break;
      default: scaleChunk<float>(t.data, ch.begin, ch.len, s); break;
    }
  }
}

}  // namespace

void adamwStep(int dev, const AdamWTensor* ts, size_t count, const AdamWConsts& c) {
  const char* op = "adamwStep";
  size_t nChunks = countChunks(ts, count);
  if (!nChunks) return;
  DeviceGuard g(dev, op);
  Table<AdamWTensor> table(dev, ts, count, nChunks, 0, 0, op);
  adamwKernel<<<gridFor(nChunks), kThreads, 0, S(dev)>>>(table.tensors(), table.chunks(), nChunks, c);
  checkLaunch(op);
}

double sumOfSquares(int dev, const NormTensor* ts, size_t count) {
  const char* op = "sumOfSquares";
  size_t nChunks = countChunks(ts, count);
  if (!nChunks) return 0.0;
  DeviceGuard g(dev, op);
  // extra: [counter (uploaded as 0), pad][result double][partials double x nChunks]
  Table<NormTensor> table(dev, ts, count, nChunks, 8, 8 + nChunks * sizeof(double), op);
  unsigned* counter = reinterpret_cast<unsigned*>(table.extra());
  double* result = reinterpret_cast<double*>(table.extra() + 8);
  double* partial = reinterpret_cast<double*>(table.extra() + 16);
  sumSqKernel<<<gridFor(nChunks), kThreads, 0, S(dev)>>>(table.tensors(), table.chunks(), nChunks, partial, counter,
                                                         result);
  checkLaunch(op);
  double out = 0.0;
  copyDeviceToHost(dev, &out, result, sizeof out, op);
  return out;
}

void scaleInPlace(int dev, const NormTensor* ts, size_t count, float s) {
  const char* op = "scaleInPlace";
  size_t nChunks = countChunks(ts, count);
  if (!nChunks) return;
  DeviceGuard g(dev, op);
  Table<NormTensor> table(dev, ts, count, nChunks, 0, 0, op);
  scaleKernel<<<gridFor(nChunks), kThreads, 0, S(dev)>>>(table.tensors(), table.chunks(), nChunks, s);
  checkLaunch(op);
}

}  // namespace cuda
}  // namespace fa
