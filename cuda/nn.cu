// LayerNorm, masked softmax, head transpose, embedding, dropout and cross-entropy on
// CUDA: the meaning of each function is its CPU reference in native/cpu/nn.cc.
// Row ops run one warp per row (fp32 accumulation, shuffles in a fixed order); column
// reductions go through per-chunk partials and a second pass in a fixed order, so a
// result never depends on scheduling. Index arguments are checked on the device: a bad
// index sets a flag (the smallest offending position) that the launcher reads back.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "../native/adapter.h"  // kDropoutStream
#include "../native/philox.h"
#include "allocator.h"
#include "common.cuh"
#include "nn.h"

namespace fa {
namespace cuda {

namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned long long kNoBadIndex = ~0ull;



// Blocks for one warp per row, rows looped over by a grid stride.
unsigned warpBlocks(size_t rows) { return blocksFor(rows * 32, kThreads); }

__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Merges two (max, sum of exp(v - max)) pairs; an empty pair has max = -inf, sum = 0.
// Symmetric in its arguments, so every lane of a butterfly ends with the same bits.
__device__ __forceinline__ void mergeSoftmax(float& m, float& s, float m2, float s2) {
  float mn = fmaxf(m, m2);
  float a = m == -INFINITY ? 0.0f : __fmul_rn(s, expf(m - mn));
  float b = m2 == -INFINITY ? 0.0f : __fmul_rn(s2, expf(m2 - mn));
  m = mn;
  s = __fadd_rn(a, b);  // no FMA contraction, which would break the symmetry
}

__device__ __forceinline__ void warpSoftmaxStats(float& m, float& s) {
  for (int o = 16; o > 0; o >>= 1) {
    float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    mergeSoftmax(m, s, m2, s2);
  }
}

// Adds v to a lane's running (max, sum); -inf adds nothing. A NaN poisons the pair as (+inf, NaN),
// which every merge and every probability then carries: a row with a NaN score is NaN, as in PyTorch
// (without this, a row of NaN scores would look like a row with nothing to attend to).
__device__ __forceinline__ void addSoftmax(float& m, float& s, float v) {
  if (v == -INFINITY) return;
  if (v != v) {
    m = INFINITY;
    s = NAN;
    return;
  }
  if (v > m) {
    s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f;
    m = v;
  } else {
    s += expf(v - m);  // NaN v lands here and propagates
  }
}

// Nonzero = attend, for a mask of any dtype (either sign of zero is 0), as on the CPU.
__device__ __forceinline__ bool maskOn(const void* m, int maskSize, bool maskInt, size_t i) {
  if (maskSize == 2) return (static_cast<const unsigned short*>(m)[i] & 0x7fffu) != 0;
  unsigned b = static_cast<const unsigned*>(m)[i];
  return maskInt ? b != 0 : (b & 0x7fffffffu) != 0;
}

// ---------------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ float lnIn(const T* x, const T* res, size_t i) {
  return res ? toF(x[i]) + toF(res[i]) : toF(x[i]);
}

template <typename T>
__global__ void layerNormKernel(const T* x, const T* res, const T* w, const T* b, T* out, float* mean, float* rstd,
                                size_t rows, size_t H, float eps) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    size_t base = r * H;
    float s = 0.0f;
    for (size_t c = lane; c < H; c += 32) s += lnIn(x, res, base + c);
    float mu = warpSum(s) / float(H);
    float q = 0.0f;
    for (size_t c = lane; c < H; c += 32) {
      float d = lnIn(x, res, base + c) - mu;
      q += d * d;
    }
    float rs = rsqrtf(warpSum(q) / float(H) + eps);
    for (size_t c = lane; c < H; c += 32)
      out[base + c] = fromF<T>((lnIn(x, res, base + c) - mu) * rs * toF(w[c]) + toF(b[c]));
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dOut * w; one warp per row.
template <typename T>
__global__ void layerNormDxKernel(const T* dOut, const T* x, const T* res, const T* w, const float* mean,
                                  const float* rstd, T* dx, size_t rows, size_t H) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    size_t base = r * H;
    float mu = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (size_t c = lane; c < H; c += 32) {
      float g = toF(dOut[base + c]) * toF(w[c]);
      float xh = (lnIn(x, res, base + c) - mu) * rs;
      sg += g;
      sgx += g * xh;
    }
    float a = warpSum(sg) / float(H), bb = warpSum(sgx) / float(H);
    for (size_t c = lane; c < H; c += 32) {
      float g = toF(dOut[base + c]) * toF(w[c]);
      float xh = (lnIn(x, res, base + c) - mu) * rs;
      dx[base + c] = fromF<T>(rs * (g - a - xh * bb));
    }
  }
}

// Partials of dWeight = Σ dOut ⊙ xhat and dBias = Σ dOut over the row chunk blockIdx.y:
// 32 columns x 8 row strips per block, strips combined in a fixed order.
template <typename T>
__global__ void layerNormParamPartialKernel(const T* dOut, const T* x, const T* res, const float* mean,
                                            const float* rstd, float* partW, float* partB, size_t rows, size_t H,
                                            size_t chunk) {
  __shared__ float sw[8][33], sb[8][33];
  size_t c = blockIdx.x * size_t(32) + threadIdx.x;
  size_t r0 = blockIdx.y * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
  float aw = 0.0f, ab = 0.0f;
  if (c < H)
    for (size_t r = r0 + threadIdx.y; r < r1; r += 8) {
      float d = toF(dOut[r * H + c]);
      aw += d * ((lnIn(x, res, r * H + c) - mean[r]) * rstd[r]);
      ab += d;
    }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < H) {
    float tw = 0.0f, tb = 0.0f;
    for (int k = 0; k < 8; k++) {
      tw += sw[k][threadIdx.x];
      tb += sb[k][threadIdx.x];
    }
    partW[blockIdx.y * H + c] = tw;
    partB[blockIdx.y * H + c] = tb;
  }
}

// Sums the chunk partials in chunk order.
__global__ void sumPartialsKernel(const float* partW, const float* partB, float* dW, float* dB, size_t chunks,
                                  size_t H) {
  for (size_t c = blockIdx.x * size_t(blockDim.x) + threadIdx.x; c < H; c += size_t(gridDim.x) * blockDim.x) {
    float tw = 0.0f, tb = 0.0f;
    for (size_t k = 0; k < chunks; k++) {
      tw += partW[k * H + c];
      tb += partB[k * H + c];
    }
    dW[c] = tw;
    dB[c] = tb;
  }
}

// ---------------------------------------------------------------------------------
// Masked softmax
// ---------------------------------------------------------------------------------

template <typename T>
__global__ void maskedSoftmaxKernel(const T* scores, const void* mask, int maskSize, bool maskInt, T* probs,
                                    size_t rows, size_t Tk, size_t rowsPerBatch, float scale, size_t causalTq) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    const T* s = scores + r * Tk;
    T* p = probs + r * Tk;
    size_t mb = mask ? (r / rowsPerBatch) * Tk : 0;
    size_t keys = causalTq ? r % causalTq + (Tk - causalTq) + 1 : Tk;  // causal: keys past the query are masked
    float m = -INFINITY, sum = 0.0f;
    for (size_t k = lane; k < keys; k += 32)
      if (!mask || maskOn(mask, maskSize, maskInt, mb + k)) addSoftmax(m, sum, scale * toF(s[k]));
    warpSoftmaxStats(m, sum);
    if (m == -INFINITY) {  // nothing to attend to: a row of zeros
      for (size_t k = lane; k < Tk; k += 32) p[k] = fromF<T>(0.0f);
      continue;
    }
    float inv = 1.0f / sum;
    for (size_t k = lane; k < Tk; k += 32) {
      bool on = k < keys && (!mask || maskOn(mask, maskSize, maskInt, mb + k));
      p[k] = fromF<T>(on ? expf(scale * toF(s[k]) - m) * inv : 0.0f);
    }
  }
}

template <typename T>
__global__ void maskedSoftmaxBackwardKernel(const T* probs, const T* dProbs, T* dScores, size_t rows, size_t Tk,
                                            float scale) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    size_t base = r * Tk;
    float dot = 0.0f;
    for (size_t k = lane; k < Tk; k += 32) dot += toF(probs[base + k]) * toF(dProbs[base + k]);
    dot = warpSum(dot);
    for (size_t k = lane; k < Tk; k += 32) {
      float p = toF(probs[base + k]);
      dScores[base + k] = fromF<T>(scale * p * (toF(dProbs[base + k]) - dot));
    }
  }
}

// ---------------------------------------------------------------------------------
// Copies: transpose12, embedding gather (in units U of 2..16 bytes)
// ---------------------------------------------------------------------------------

// out[a, c, b, :] = x[a, b, c, :], Du units per innermost row.
template <typename U>
__global__ void transpose12Kernel(const U* x, U* out, size_t total, size_t B, size_t C, size_t Du) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    size_t d = i % Du, t = i / Du;
    size_t b = t % B;
    t /= B;
    size_t c = t % C, a = t / C;
    out[i] = x[((a * B + b) * C + c) * Du + d];
  }
}

template <typename U>
__global__ void gatherKernel(const U* table, const int32_t* ids, U* out, size_t total, size_t Hu, long long V) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    size_t n = i / Hu, h = i % Hu;
    int32_t id = ids[n];
    if (id >= 0 && id < V) out[i] = table[size_t(id) * Hu + h];  // bad ids are flagged by checkIndexKernel
  }
}

// The widest unit (16, 8, 4 or 2 bytes) that divides a row of rowBytes and aligns both pointers.
size_t unitFor(size_t rowBytes, const void* a, const void* b) {
  uintptr_t align = reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b);
  for (size_t u = 16; u > 2; u >>= 1)
    if (rowBytes % u == 0 && align % u == 0) return u;
  return 2;
}

template <typename F>
void dispatchUnit(size_t u, F&& f) {
  switch (u) {
    case 16: f(uint4{}); break;
    case 8: f(uint2{}); break;
    case 4: f(uint32_t{}); break;
    default: f(uint16_t{}); break;
  }
}

// ---------------------------------------------------------------------------------
// Index checks and the embedding backward
// ---------------------------------------------------------------------------------

// Records the smallest position whose index is outside [0, limit) (ignoring `allowed` when
// hasAllowed). With keys: keys[i] = the index, or limit for a bad one; vals[i] = i.
__global__ void checkIndexKernel(const int32_t* ids, size_t n, long long limit, bool hasAllowed, int32_t allowed,
                                 unsigned long long* flag, int* keys, int* vals) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    int32_t v = ids[i];
    bool inRange = v >= 0 && v < limit;
    if (!inRange && !(hasAllowed && v == allowed)) atomicMin(flag, (unsigned long long)i);  // min: order-free
    if (keys) {
      keys[i] = inRange ? v : int(limit);
      vals[i] = int(i);
    }
  }
}

// The flag of one op's indices: set up on the stream, read back at the end.
struct IndexCheck {
  int dev;
  Scratch flag;
  const char* op;
  IndexCheck(int d, const char* o) : dev(d), flag(d, sizeof(unsigned long long)), op(o) {
    check(cudaMemsetAsync(flag.p, 0xff, sizeof(unsigned long long), S(dev)), op, "cudaMemsetAsync");
  }
  void run(const int32_t* ids, size_t n, long long limit, bool hasAllowed, int32_t allowed, int* keys = nullptr,
           int* vals = nullptr) {
    if (!n) return;
    checkIndexKernel<<<blocksFor(n, kThreads), kThreads, 0, S(dev)>>>(ids, n, limit, hasAllowed, allowed,
                                                                     flag.as<unsigned long long>(), keys, vals);
    checkLaunch(op);
  }
  // Waits for the stream; -1, or the first bad position with its value in *bad.
  int64_t result(const int32_t* ids, int32_t* bad) {
    unsigned long long pos = kNoBadIndex;
    copyDeviceToHost(dev, &pos, flag.p, sizeof pos, op);
    if (pos == kNoBadIndex) return -1;
    copyDeviceToHost(dev, bad, ids + pos, sizeof(int32_t), op);
    return int64_t(pos);
  }
};

// Block i of the sorted (id, position) pairs starts a run of equal ids when its id differs
// from the previous one; it then sums the run's dOut rows in position order (a stable sort
// keeps them in order), column by column, and writes that dTable row. Sentinel id V: skipped.
template <typename T>
__global__ void embeddingBackwardKernel(const int* keys, const int* pos, const T* dOut, float* dTable, size_t N,
                                        size_t H, int V) {
  for (size_t i = blockIdx.x; i < N; i += gridDim.x) {
    int id = keys[i];
    if (id >= V || (i > 0 && keys[i - 1] == id)) continue;
    size_t end = i + 1;
    while (end < N && keys[end] == id) end++;
    for (size_t c = threadIdx.x; c < H; c += blockDim.x) {
      float s = 0.0f;
      for (size_t j = i; j < end; j++) s += toF(dOut[size_t(pos[j]) * H + c]);
      dTable[size_t(id) * H + c] = s;
    }
  }
}

// ---------------------------------------------------------------------------------
// Dropout and cross-entropy
// ---------------------------------------------------------------------------------

// Thread per group of 4 elements: one Philox block gives their 4 words (word i&3 of block i/4).
template <typename T>
__global__ void dropoutKernel(const T* x, T* out, size_t n, uint32_t threshold, float keep, uint64_t seed) {
  size_t groups = (n + 3) / 4;
  for (size_t g = blockIdx.x * size_t(blockDim.x) + threadIdx.x; g < groups; g += size_t(gridDim.x) * blockDim.x) {
    U32x4 r = philox4x32(seed, g, kDropoutStream);
    uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
      size_t i = 4 * g + j;
      if (i < n) out[i] = fromF<T>(w[j] >= threshold ? toF(x[i]) * keep : 0.0f);
    }
  }
}

// Deterministic block-wide sum (1024 threads at most): warps, then warp 0.
__device__ float blockSum(float v) {
  __shared__ float part[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = threadIdx.x < unsigned(nw) ? part[threadIdx.x] : 0.0f;
  if (warp == 0) v = warpSum(v);
  return v;  // valid in thread 0
}

// One block: count of labels != ignoreIndex.
__global__ void countLabelsKernel(const int32_t* labels, size_t rows, int32_t ignoreIndex, int* count) {
  __shared__ int part[32];
  int c = 0;
  for (size_t r = threadIdx.x; r < rows; r += blockDim.x) c += labels[r] != ignoreIndex;
  for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    int t = 0;
    for (unsigned w = 0; w < (blockDim.x + 31) / 32; w++) t += part[w];
    *count = t;
  }
}

// One warp per row: rowLoss = logsumexp - logit[label]; dLogits = (softmax - onehot) / count.
template <typename T>
__global__ void crossEntropyKernel(const T* logits, const int32_t* labels, const int* count, float* rowLoss,
                                   T* dLogits, size_t rows, size_t C, int32_t ignoreIndex) {
  int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  int cnt = *count;
  float invCount = cnt ? 1.0f / float(cnt) : 0.0f;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    const T* z = logits + r * C;
    T* d = dLogits + r * C;
    int32_t label = labels[r];
    if (label == ignoreIndex || label < 0 || size_t(label) >= C) {  // ignored (a bad label is flagged)
      for (size_t c = lane; c < C; c += 32) d[c] = fromF<T>(0.0f);
      if (lane == 0) rowLoss[r] = 0.0f;
      continue;
    }
    float m = -INFINITY;
    for (size_t c = lane; c < C; c += 32) m = fmaxf(m, toF(z[c]));
    m = warpMax(m);
    float s = 0.0f;
    for (size_t c = lane; c < C; c += 32) s += expf(toF(z[c]) - m);
    s = warpSum(s);
    float inv = 1.0f / s;
    for (size_t c = lane; c < C; c += 32) {
      float v = expf(toF(z[c]) - m) * inv * invCount;
      if (c == size_t(label)) v -= invCount;
      d[c] = fromF<T>(v);
    }
    if (lane == 0) rowLoss[r] = logf(s) + m - toF(z[label]);
  }
}

// One block: loss = Σ rowLoss / count (0 when no row counts), in a fixed order.
__global__ void meanLossKernel(const float* rowLoss, const int* count, float* loss, size_t rows) {
  float s = 0.0f;
  for (size_t r = threadIdx.x; r < rows; r += blockDim.x) s += rowLoss[r];
  s = blockSum(s);
  if (threadIdx.x == 0) {
    int cnt = *count;
    *loss = cnt ? s / float(cnt) : 0.0f;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------

void layerNorm(int dev, DType t, const void* x, const void* residual, const void* weight, const void* bias, void* out,
               float* mean, float* rstd, size_t rows, size_t H, float eps) {
  if (!rows || !H) return;
  DeviceGuard g(dev, "layerNorm");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    layerNormKernel<T><<<warpBlocks(rows), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<const T*>(weight),
        static_cast<const T*>(bias), static_cast<T*>(out), mean, rstd, rows, H, eps);
  });
  checkLaunch("layerNorm");
}

void layerNormBackward(int dev, DType t, const void* dOut, const void* x, const void* residual, const void* weight,
                       const float* mean, const float* rstd, void* dx, float* dWeight, float* dBias, size_t rows,
                       size_t H) {
  if (!H) return;
  const char* op = "layerNormBackward";
  DeviceGuard g(dev, op);
  if (!rows) {
    check(cudaMemsetAsync(dWeight, 0, H * 4, S(dev)), op, "cudaMemsetAsync");
    check(cudaMemsetAsync(dBias, 0, H * 4, S(dev)), op, "cudaMemsetAsync");
    return;
  }
  // Row chunks for the parameter partials: up to 256 chunks of at least 32 rows.
  size_t chunks = std::min<size_t>(256, (rows + 31) / 32);
  size_t chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + chunk - 1) / chunk;
  Scratch part(dev, 2 * chunks * H * sizeof(float));
  float* partW = part.as<float>();
  float* partB = partW + chunks * H;
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    const T* d = static_cast<const T*>(dOut);
    const T* xx = static_cast<const T*>(x);
    const T* res = static_cast<const T*>(residual);
    layerNormDxKernel<T><<<warpBlocks(rows), kThreads, 0, S(dev)>>>(d, xx, res, static_cast<const T*>(weight), mean,
                                                                    rstd, static_cast<T*>(dx), rows, H);
    checkLaunch(op);
    dim3 grid(unsigned((H + 31) / 32), unsigned(chunks));
    layerNormParamPartialKernel<T><<<grid, dim3(32, 8), 0, S(dev)>>>(d, xx, res, mean, rstd, partW, partB, rows, H,
                                                                    chunk);
    checkLaunch(op);
  });
  sumPartialsKernel<<<blocksFor(H, kThreads), kThreads, 0, S(dev)>>>(partW, partB, dWeight, dBias, chunks, H);
  checkLaunch(op);
}

void maskedSoftmax(int dev, DType t, const void* scores, const void* keyMask, DType maskType, void* probs,
                   size_t rows, size_t Tk, size_t rowsPerBatch, float scale, size_t causalTq) {
  if (!rows || !Tk) return;
  DeviceGuard g(dev, "maskedSoftmax");
  int maskSize = int(dtypeSize(maskType));
  bool maskInt = maskType == DType::I32;
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    maskedSoftmaxKernel<T><<<warpBlocks(rows), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(scores), keyMask, maskSize, maskInt, static_cast<T*>(probs), rows, Tk,
        rowsPerBatch ? rowsPerBatch : 1, scale, causalTq);
  });
  checkLaunch("maskedSoftmax");
}

void maskedSoftmaxBackward(int dev, DType t, const void* probs, const void* dProbs, void* dScores, size_t rows,
                           size_t Tk, float scale) {
  if (!rows || !Tk) return;
  DeviceGuard g(dev, "maskedSoftmaxBackward");
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    maskedSoftmaxBackwardKernel<T><<<warpBlocks(rows), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(probs), static_cast<const T*>(dProbs), static_cast<T*>(dScores), rows, Tk, scale);
  });
  checkLaunch("maskedSoftmaxBackward");
}

void transpose12(int dev, size_t elemSize, const void* x, void* out, size_t A, size_t B, size_t C, size_t D) {
  size_t rowBytes = D * elemSize;
  if (!A || !B || !C || !rowBytes) return;
  DeviceGuard g(dev, "transpose12");
  size_t u = unitFor(rowBytes, x, out);
  size_t Du = rowBytes / u, total = A * B * C * Du;
  dispatchUnit(u, [&](auto tag) {
    using U = decltype(tag);
    transpose12Kernel<U><<<blocksFor(total, kThreads), kThreads, 0, S(dev)>>>(static_cast<const U*>(x),
                                                                              static_cast<U*>(out), total, B, C, Du);
  });
  checkLaunch("transpose12");
}

int64_t embedding(int dev, DType t, const void* table, const int32_t* ids, void* out, size_t N, size_t H, size_t V,
                  int32_t* bad) {
  if (!N) return -1;
  const char* op = "embedding";
  DeviceGuard g(dev, op);
  IndexCheck chk(dev, op);
  chk.run(ids, N, (long long)V, false, 0);
  size_t rowBytes = H * dtypeSize(t);
  if (rowBytes) {
    size_t u = unitFor(rowBytes, table, out);
    size_t Hu = rowBytes / u, total = N * Hu;
    dispatchUnit(u, [&](auto tag) {
      using U = decltype(tag);
      gatherKernel<U><<<blocksFor(total, kThreads), kThreads, 0, S(dev)>>>(
          static_cast<const U*>(table), ids, static_cast<U*>(out), total, Hu, (long long)V);
    });
    checkLaunch(op);
  }
  return chk.result(ids, bad);
}

int64_t embeddingBackward(int dev, DType t, const void* dOut, const int32_t* ids, float* dTable, size_t N, size_t H,
                          size_t V, int32_t* bad) {
  const char* op = "embeddingBackward";
  if (N > size_t(INT_MAX) || V > size_t(INT_MAX))
    throw std::runtime_error(std::string(op) + ": more than 2^31 - 1 positions or embeddings");
  DeviceGuard g(dev, op);
  if (V && H) check(cudaMemsetAsync(dTable, 0, V * H * sizeof(float), S(dev)), op, "cudaMemsetAsync");
  if (!N) return -1;
  IndexCheck chk(dev, op);
  // (id, position) pairs, a bad id replaced by the sentinel V, stably sorted by id.
  Scratch keys(dev, 2 * N * sizeof(int)), vals(dev, 2 * N * sizeof(int));
  int* keysIn = keys.as<int>();
  int* keysOut = keysIn + N;
  int* valsIn = vals.as<int>();
  int* valsOut = valsIn + N;
  chk.run(ids, N, (long long)V, false, 0, keysIn, valsIn);
  if (H) {
    int endBit = 1;
    while (endBit < 32 && (1ull << endBit) <= V) endBit++;
    size_t tempBytes = 0;
    check(cub::DeviceRadixSort::SortPairs(nullptr, tempBytes, keysIn, keysOut, valsIn, valsOut, int(N), 0, endBit,
                                          S(dev)),
          op, "cub::DeviceRadixSort::SortPairs");
    Scratch temp(dev, tempBytes);
    check(cub::DeviceRadixSort::SortPairs(temp.p, tempBytes, keysIn, keysOut, valsIn, valsOut, int(N), 0, endBit,
                                          S(dev)),
          op, "cub::DeviceRadixSort::SortPairs");
    unsigned threads = H >= 256 ? 256u : unsigned((H + 31) / 32 * 32);
    unsigned blocks = unsigned(std::min<size_t>(N, size_t(INT_MAX)));
    dispatchFloat(t, [&](auto tag) {
      using T = decltype(tag);
      embeddingBackwardKernel<T><<<blocks, threads, 0, S(dev)>>>(keysOut, valsOut, static_cast<const T*>(dOut),
                                                                 dTable, N, H, int(V));
    });
    checkLaunch(op);
  }
  return chk.result(ids, bad);
}

int64_t softmaxCrossEntropy(int dev, DType t, const void* logits, const int32_t* labels, float* loss, void* dLogits,
                            size_t rows, size_t C, int32_t ignoreIndex, int32_t* bad) {
  const char* op = "softmaxCrossEntropy";
  DeviceGuard g(dev, op);
  IndexCheck chk(dev, op);
  chk.run(labels, rows, (long long)C, true, ignoreIndex);
  Scratch count(dev, sizeof(int)), rowLoss(dev, rows * sizeof(float));
  countLabelsKernel<<<1, 1024, 0, S(dev)>>>(labels, rows, ignoreIndex, count.as<int>());
  checkLaunch(op);
  if (rows && C) {
    dispatchFloat(t, [&](auto tag) {
      using T = decltype(tag);
      crossEntropyKernel<T><<<warpBlocks(rows), kThreads, 0, S(dev)>>>(static_cast<const T*>(logits), labels,
                                                                        count.as<int>(), rowLoss.as<float>(),
                                                                        static_cast<T*>(dLogits), rows, C,
                                                                        ignoreIndex);
    });
    checkLaunch(op);
  } else if (rows) {  // C = 0: every label is ignored (or flagged); the loss is 0
    check(cudaMemsetAsync(rowLoss.p, 0, rows * sizeof(float), S(dev)), op, "cudaMemsetAsync");
  }
  meanLossKernel<<<1, 1024, 0, S(dev)>>>(rowLoss.as<float>(), count.as<int>(), loss, rows);
  checkLaunch(op);
  return chk.result(labels, bad);
}

void dropout(int dev, DType t, const void* x, void* out, size_t n, float p, uint64_t seed) {
  if (!n) return;
  DeviceGuard g(dev, "dropout");
  uint32_t threshold = dropoutThreshold(p);
  float keep = 1.0f / (1.0f - p);
  size_t groups = (n + 3) / 4;
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    dropoutKernel<T><<<blocksFor(groups, kThreads), kThreads, 0, S(dev)>>>(static_cast<const T*>(x),
                                                                           static_cast<T*>(out), n, threshold, keep,
                                                                           seed);
  });
  checkLaunch("dropout");
}

}  // namespace cuda
}  // namespace fa
