// CUDA generation kernels; the meaning of each is its CPU reference in native/cpu/generation.cc.
//   cacheScatter:    one thread per 16-byte word (or byte, for odd rows) of the rows to write.
//   decodeAttention: grid (parts, B·Hq), 4 warps per block; lane l owns dims l, l+32, … of the head;
//                    each warp walks every 4th key of its part with an online softmax (running max,
//                    sum, output), the block merges its warps, and with more than one part a second
//                    kernel merges the parts. K/V heads shared by G query heads are read by G blocks,
//                    from L2 after the first.
//   sampleTokens:    one block of 1024 threads per row: the row (penalty applied, over temperature)
//                    in fp32 scratch; argmax for greedy rows; the top-k key and top-p weight
//                    thresholds bit by bit from the top (32 counting passes each), then a block scan
//                    over contiguous per-thread chunks finds the sampled index. Every reduction has
//                    a fixed order, so a row's result does not change from run to run.
#include <cmath>

#include "common.cuh"
#include "generation.h"

namespace fa {
namespace cuda {

namespace {

// ---- cache write ----

__global__ void scatterKernel(char* pool, const char* src, const int32_t* slots, size_t N, size_t words,
                              size_t wordBytes, size_t slotCount) {
  size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= N * words) return;
  size_t i = e / words, w = e % words;
  int32_t slot = slots[i];
  if (slot < 0 || size_t(slot) >= slotCount) return;
  size_t rowBytes = words * wordBytes;
  if (wordBytes == 16)
    reinterpret_cast<int4*>(pool + size_t(slot) * rowBytes)[w] = reinterpret_cast<const int4*>(src + i * rowBytes)[w];
  else
    pool[size_t(slot) * rowBytes + w] = src[i * rowBytes + w];
}

// ---- decode attention ----

constexpr int kWarps = 4;
constexpr int kChunks = int(kDecodeMaxD / 32);

__device__ __forceinline__ float weightOf(float m, float M) { return m == -INFINITY ? 0.0f : __expf(m - M); }

template <typename T>
__global__ void decodeKernel(const T* q, const T* kPool, const T* vPool, const int32_t* table, const int32_t* lens,
                             T* out, float* partM, float* partL, float* partAcc, DecodeShape s) {
  __shared__ float wm[kWarps], wl[kWarps];
  extern __shared__ float wacc[];  // [kWarps][D]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const size_t P = s.splits, part = blockIdx.x, bh = blockIdx.y, b = bh / s.Hq, h = bh % s.Hq;
  const size_t kvh = h / (s.Hq / s.Hkv), D = s.D;
  long long lenRaw = lens[b];
  size_t len = lenRaw < 0 ? 0 : size_t(lenRaw);
  if (len > s.maxPages * s.pageSize) len = s.maxPages * s.pageSize;
  const size_t chunk = (len + P - 1) / P, j0 = min(len, part * chunk), j1 = min(len, j0 + chunk);
  float qf[kChunks], acc[kChunks];
  for (int c = 0; c < kChunks; c++) {
    size_t d = lane + 32 * c;
    qf[c] = d < D ? toF(q[bh * D + d]) : 0.0f;
    acc[c] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (size_t j = j0 + warp; j < j1; j += kWarps) {
    int32_t page = table[b * s.maxPages + j / s.pageSize];
    if (page < 0 || size_t(page) >= s.pages()) continue;
    const size_t at = ((size_t(page) * s.pageSize + j % s.pageSize) * s.Hkv + kvh) * D;
    float dot = 0.0f;
    for (int c = 0; c < kChunks; c++) {
      size_t d = lane + 32 * c;
      if (d < D) dot += qf[c] * toF(kPool[at + d]);
    }
    dot = warpSum(dot) * s.scale;
    float mn = fmaxf(m, dot), corr = weightOf(m, mn), p = __expf(dot - mn);
    l = l * corr + p;
    for (int c = 0; c < kChunks; c++) {
      size_t d = lane + 32 * c;
      acc[c] = acc[c] * corr + (d < D ? p * toF(vPool[at + d]) : 0.0f);
    }
    m = mn;
  }
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = l;
  }
  for (int c = 0; c < kChunks; c++) {
    size_t d = lane + 32 * c;
    if (d < D) wacc[warp * D + d] = acc[c];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kWarps; w++) M = fmaxf(M, wm[w]);
  float L = 0.0f;
  for (int w = 0; w < kWarps; w++) L += wl[w] * weightOf(wm[w], M);
  for (size_t d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < kWarps; w++) a += wacc[w * D + d] * weightOf(wm[w], M);
    if (P == 1) out[bh * D + d] = fromF<T>(L > 0 ? a / L : 0.0f);
    else partAcc[(bh * P + part) * D + d] = a;
  }
  if (P > 1 && threadIdx.x == 0) {
    partM[bh * P + part] = M;
    partL[bh * P + part] = L;
  }
}

template <typename T>
__global__ void combineKernel(const float* partM, const float* partL, const float* partAcc, T* out, size_t P, size_t D) {
  const size_t bh = blockIdx.x;
  float M = -INFINITY, L = 0.0f;
  for (size_t p = 0; p < P; p++) M = fmaxf(M, partM[bh * P + p]);
  for (size_t p = 0; p < P; p++) L += partL[bh * P + p] * weightOf(partM[bh * P + p], M);
  for (size_t d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
    for (size_t p = 0; p < P; p++) a += partAcc[(bh * P + p) * D + d] * weightOf(partM[bh * P + p], M);
    out[bh * D + d] = fromF<T>(L > 0 ? a / L : 0.0f);
  }
}

// ---- sampling ----

constexpr int kSampleThreads = 1024;

// Block-wide sums and maxima in a fixed order (a tree over warps): the same result on every run.
template <typename U>
__device__ U blockSum(U v, U* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  U total = 0;
  for (int w = 0; w < kSampleThreads / 32; w++) total += sh[w];
  return total;
}

// The largest key τ with Σ_{key_i ≥ τ} weight_i ≥ target, bit by bit from the top: candidate
// τ | bit is kept when the weight at or above it still reaches the target.
template <typename KeyF, typename WeightF>
__device__ uint32_t largestThreshold(size_t V, KeyF key, WeightF weight, float target, float* sh) {
  uint32_t tau = 0;
  for (int bit = 31; bit >= 0; bit--) {
    uint32_t cand = tau | (1u << bit);
    float mass = 0.0f;
    for (size_t i = threadIdx.x; i < V; i += kSampleThreads)
      if (key(i) >= cand) mass += weight(i);
    if (blockSum(mass, sh) >= target) tau = cand;
  }
  return tau;
}

template <typename T>
__global__ void sampleKernel(const T* logits, const float* params, const int32_t* penaltyIds, size_t P,
                             int32_t* tokens, size_t V, float* scratch) {
  __shared__ float shF[kSampleThreads / 32];
  __shared__ float shM[kSampleThreads / 32];
  __shared__ int shI[kSampleThreads / 32];
  __shared__ float prefix[kSampleThreads];
  __shared__ int found;
  const size_t b = blockIdx.x;
  const float* prm = params + b * kSampleParams;
  const float temperature = prm[0], topK = prm[1], topP = prm[2], pen = prm[3], u = prm[4];
  float* x = scratch + b * V;
  for (size_t i = threadIdx.x; i < V; i += kSampleThreads) x[i] = toF(logits[b * V + i]);
  __syncthreads();
  if (penaltyIds && pen != 1.0f)
    for (size_t j = threadIdx.x; j < P; j += kSampleThreads) {
      int32_t id = penaltyIds[b * P + j];
      if (id >= 0 && size_t(id) < V) x[id] = x[id] > 0 ? x[id] / pen : x[id] * pen;
    }
  __syncthreads();
  // argmax over finite logits, the first index on ties
  float bv = -INFINITY;
  int bi = -1;
  for (size_t i = threadIdx.x; i < V; i += kSampleThreads)
    if (isfinite(x[i]) && (bi < 0 || x[i] > bv)) {
      bv = x[i];
      bi = int(i);
    }
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
      bv = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    shM[warp] = bv;
    shI[warp] = bi;
  }
  __syncthreads();
  int best = -1;
  float mxLogit = -INFINITY;
  for (int w = 0; w < kSampleThreads / 32; w++)
    if (shI[w] >= 0 && (best < 0 || shM[w] > mxLogit || (shM[w] == mxLogit && shI[w] < best))) {
      mxLogit = shM[w];
      best = shI[w];
    }
  if (best < 0 || !(temperature > 0)) {
    if (threadIdx.x == 0) tokens[b] = best;
    return;
  }
  // z = x / T in place (NaN as −∞); the largest z is the largest logit's
  __syncthreads();
  for (size_t i = threadIdx.x; i < V; i += kSampleThreads) x[i] = isnan(x[i]) ? -INFINITY : x[i] / temperature;
  __syncthreads();
  const float mz = x[best];
  uint32_t kMin = 0;
  if (topK >= 1 && topK < float(V))
    kMin = largestThreshold(V, [&](size_t i) { return orderedKey(x[i]); }, [](size_t) { return 1.0f; }, topK, shF);
  auto w = [&](size_t i) { return orderedKey(x[i]) >= kMin ? __expf(x[i] - mz) : 0.0f; };
  uint32_t wMin = 0;
  if (topP < 1.0f) {
    float total = 0.0f;
    for (size_t i = threadIdx.x; i < V; i += kSampleThreads) total += w(i);
    total = blockSum(total, shF);
    wMin = largestThreshold(V, [&](size_t i) { return orderedKey(w(i)); }, w, topP * total, shF);
  }
  auto kept = [&](size_t i) {
    float wi = w(i);
    return orderedKey(wi) >= wMin && wi > 0 ? wi : 0.0f;
  };
  // contiguous chunks per thread, so that the scan follows vocabulary order
  const size_t per = (V + kSampleThreads - 1) / kSampleThreads, c0 = min(V, threadIdx.x * per), c1 = min(V, c0 + per);
  float mine = 0.0f;
  int lastKept = -1;
  for (size_t i = c0; i < c1; i++) {
    float k = kept(i);
    mine += k;
    if (k > 0) lastKept = int(i);
  }
  prefix[threadIdx.x] = mine;
  if (threadIdx.x == 0) found = int(V);
  __syncthreads();
  if (threadIdx.x == 0) {  // exclusive scan, in order
    float run = 0.0f;
    for (int t2 = 0; t2 < kSampleThreads; t2++) {
      float v2 = prefix[t2];
      prefix[t2] = run;
      run += v2;
    }
    shF[0] = run;
  }
  __syncthreads();
  const float r = u * shF[0];
  float run = prefix[threadIdx.x];
  if (run <= r && r < run + mine)
    for (size_t i = c0; i < c1; i++) {
      float k = kept(i);
      if (k <= 0) continue;
      run += k;
      if (run > r) {
        atomicMin(&found, int(i));
        break;
      }
    }
  // rounding can leave r at or past the last kept weight: the last kept index then
  __syncthreads();
  int lastAll = lastKept;
  for (int o = 16; o > 0; o >>= 1) lastAll = max(lastAll, __shfl_xor_sync(0xffffffffu, lastAll, o));
  if (lane == 0) shI[warp] = lastAll;
  __syncthreads();
  if (threadIdx.x == 0) {
    int last = best;
    for (int w2 = 0; w2 < kSampleThreads / 32; w2++) last = max(last, shI[w2]);
    tokens[b] = found < int(V) ? found : last;
  }
}

}  // namespace

void cacheScatter(int dev, void* pool, size_t slotCount, const void* src, const int32_t* slots, size_t N, size_t rowBytes) {
  const char* op = "cacheScatter";
  if (!N || !rowBytes) return;
  DeviceGuard g(dev, op);
  size_t wordBytes = rowBytes % 16 == 0 && reinterpret_cast<uintptr_t>(pool) % 16 == 0 &&
                             reinterpret_cast<uintptr_t>(src) % 16 == 0 ? 16 : 1;
  size_t words = rowBytes / wordBytes;
  scatterKernel<<<blocksFor(N * words, 256), 256, 0, S(dev)>>>(static_cast<char*>(pool), static_cast<const char*>(src),
                                                               slots, N, words, wordBytes, slotCount);
  checkLaunch(op);
}

size_t decodeSplits(int dev, size_t B, size_t Hq, size_t maxLength) {
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "decodeAttention", "cudaDeviceGetAttribute");
  size_t want = (size_t(2 * sms) + B * Hq - 1) / (B * Hq);  // two blocks per multiprocessor
  size_t most = (maxLength + 255) / 256;                    // at least 256 keys per part
  size_t p = want < most ? want : most;
  return p < 1 ? 1 : p;
}

void decodeAttention(int dev, DType t, const void* q, const void* kPool, const void* vPool, const int32_t* pageTable,
                     const int32_t* seqLens, void* out, const DecodeShape& s) {
  const char* op = "decodeAttention";
  if (s.D > kDecodeMaxD) throw std::runtime_error(std::string(op) + ": head size " + std::to_string(s.D) + " exceeds the CUDA kernel's " + std::to_string(kDecodeMaxD));
  if (!s.B || !s.Hq) return;
  DeviceGuard g(dev, op);
  const size_t P = s.splits < 1 ? 1 : s.splits, n = s.B * s.Hq;
  Scratch m(dev, P > 1 ? n * P * 4 : 4), l(dev, P > 1 ? n * P * 4 : 4), acc(dev, P > 1 ? n * P * s.D * 4 : 4);
  DecodeShape sh = s;
  sh.splits = P;
  dim3 grid{unsigned(P), unsigned(n)};
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    decodeKernel<T><<<grid, kWarps * 32, kWarps * s.D * sizeof(float), S(dev)>>>(
        static_cast<const T*>(q), static_cast<const T*>(kPool), static_cast<const T*>(vPool), pageTable, seqLens,
        static_cast<T*>(out), m.as<float>(), l.as<float>(), acc.as<float>(), sh);
    checkLaunch(op);
    if (P > 1) {
      combineKernel<T><<<unsigned(n), 128, 0, S(dev)>>>(m.as<float>(), l.as<float>(), acc.as<float>(), static_cast<T*>(out), P, s.D);
      checkLaunch(op);
    }
  });
}

void sampleTokens(int dev, DType t, const void* logits, const float* params, const int32_t* penaltyIds, size_t P,
                  int32_t* tokens, size_t B, size_t V) {
  const char* op = "sampleTokens";
  if (!B) return;
  DeviceGuard g(dev, op);
  Scratch x(dev, B * V * sizeof(float));
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    sampleKernel<T><<<unsigned(B), kSampleThreads, 0, S(dev)>>>(static_cast<const T*>(logits), params, penaltyIds, P,
                                                                tokens, V, x.as<float>());
    checkLaunch(op);
  });
}

}  // namespace cuda
}  // namespace fa
