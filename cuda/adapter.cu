// CUDA bottleneck adapter: the cuBLAS-composed path and the fused row-tile path.
// Math and layouts: native/adapter.h. Dispatch and shapes that fit: adapter.h.
#include <mma.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "../native/philox.h"
#include "adapter.h"
#include "allocator.h"
#include "cublas.h"
#include "common.cuh"

namespace fa {
namespace cuda {

using namespace nvcuda;

namespace {

constexpr unsigned kThreads = 256;
constexpr int kMaxFusedR = 256; // the bottleneck held in shared memory



struct DropoutParams {
  float p = 0.0f;
  uint32_t threshold = 0;
  float keepScale = 1.0f;
  uint64_t seed = 0;
  explicit DropoutParams(const AdapterArgs& a)
      : p(a.dropout), threshold(dropoutThreshold(a.dropout)), keepScale(1.0f / (1.0f - a.dropout)), seed(a.seed) {}
  __device__ __forceinline__ float at(uint64_t i) const {
    if (p <= 0.0f) return 1.0f;
    return philoxWord(seed, kDropoutStream, i) >= threshold ? keepScale : 0.0f;
  }
};

template <typename T>
__device__ __forceinline__ float scaleAt(const T* scaleT, int scaleLen, float scale, int c) {
  return scaleT ? toF(scaleT[scaleLen == 1 ? 0 : c]) : scale;
}

// ---------------------------------------------------------------------------------
// Small kernels of the cuBLAS-composed path
// ---------------------------------------------------------------------------------

// h_pre += b_down; h = act(h_pre)
template <typename T>
__global__ void biasActKernel(float* hPre, const T* bDown, T* h, size_t n, int r, Act act) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float v = hPre[i] + toF(bDown[i % r]);
    hPre[i] = v;
    h[i] = fromF<T>(actForward(act, v));
  }
}

template <typename T>
__global__ void actKernel(const float* hPre, T* h, size_t n, Act act) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    h[i] = fromF<T>(actForward(act, hPre[i]));
}

// out = residual + dropout(s ⊙ (z + b_up))
template <typename T>
__global__ void epilogueKernel(const T* z, const T* bUp, const T* res, const T* scaleT, int scaleLen, float scale,
                               DropoutParams drop, T* out, size_t n, int d) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    int c = int(i % d);
    float zz = toF(z[i]) + toF(bUp[c]);
    out[i] = fromF<T>(toF(res[i]) + drop.at(i) * scaleAt(scaleT, scaleLen, scale, c) * zz);
  }
}

// gm = dOut ⊙ mask (fp32, only when dScale is wanted); gs = gm ⊙ s
template <typename T>
__global__ void gradPrepKernel(const T* dOut, const T* scaleT, int scaleLen, float scale, DropoutParams drop, T* gs,
                               float* gm, size_t n, int d) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    int c = int(i % d);
    float g = toF(dOut[i]) * drop.at(i);
    if (gm) gm[i] = g;
    gs[i] = fromF<T>(g * scaleAt(scaleT, scaleLen, scale, c));
  }
}

// dh_pre = dh ⊙ act'(h_pre), as fp32 (in place) and as T for the GEMMs
template <typename T>
__global__ void actGradKernel(float* dH, const float* hPre, T* dHpreT, size_t n, Act act) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float v = dH[i] * actGrad(act, hPre[i]);
    dH[i] = v;
    dHpreT[i] = fromF<T>(v);
  }
}

// out[c] = Σ_r x[r, c] (· y[r, c] + bias[c] when y is given): 32 columns x 8 row strips
// per block, fixed summation order, so repeated runs agree bit for bit.
template <typename T, typename Y>
__global__ void colReduceKernel(const T* x, const Y* y, const Y* yBias, float* out, size_t rows, size_t cols) {
  __shared__ float part[8][33];
  size_t c = blockIdx.x * size_t(32) + threadIdx.x;
  float s = 0.0f;
  if (c < cols) {
    float b = yBias ? toF(yBias[c]) : 0.0f;
    for (size_t r = threadIdx.y; r < rows; r += 8) {
      float v = toF(x[r * cols + c]);
      if (y) v *= toF(y[r * cols + c]) + b;
      s += v;
    }
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.0f;
    for (int k = 0; k < 8; k++) t += part[k][threadIdx.x];
    out[c] = t;
  }
}

// out[0] = Σ v (one block, fixed order)
__global__ void sumKernel(const float* v, int n, float* out) {
  __shared__ float part[256];
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += 256) s += v[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = part[0];
}

// Splits dUp_aug [d, r+16] (last block: column r = Σ dOut) into dUp [d, r] and dUpBias [d].
__global__ void splitAugKernel(const float* aug, int d, int r, float* dUp, float* dUpB) {
  int ld = r + 16;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < size_t(d) * ld; i += size_t(gridDim.x) * blockDim.x) {
    int row = int(i / ld), col = int(i % ld);
    if (col < r) dUp[size_t(row) * r + col] = aug[i];
    else if (col == r) dUpB[row] = aug[i];
  }
}

template <typename T, typename Y>
void colReduce(int dev, const T* x, const Y* y, const Y* yBias, float* out, size_t rows, size_t cols) {
  colReduceKernel<T, Y><<<unsigned((cols + 31) / 32), dim3(32, 8), 0, S(dev)>>>(x, y, yBias, out, rows, cols);
}

// ---------------------------------------------------------------------------------
// Fused row-tile kernels
// ---------------------------------------------------------------------------------

// Which rows a tile covers and which adapter's weights it uses: contiguous rows for one
// adapter, or (batched) a gathered list of row indices (-1 = empty slot) per tile.
struct TileMap {
  const int* rowIdx = nullptr;          // [tiles * tileRows] or nullptr
  const int* tileAdapter = nullptr;     // [tiles] or nullptr (adapter 0)
  const float* adapterScale = nullptr;  // [A] or nullptr (use the scalar / scale tensor)
  int tileRows = 0;                     // rows per tile of the kernel that reads this map
  __device__ __forceinline__ int row(int tile, int i, int N) const {
    int r = rowIdx ? rowIdx[tile * tileRows + i] : tile * tileRows + i;
    return r < N ? r : -1;
  }
  __device__ __forceinline__ int adapter(int tile) const { return tileAdapter ? tileAdapter[tile] : 0; }
};

template <typename T>
struct FwdParams {
  const T* x;
  const T* res;  // residual; nullptr: x
  const T *downW, *downB, *upW, *upB, *scaleT;
  int scaleLen;
  float scale;
  DropoutParams drop;
  T* out;
  float* hPre;  // may be nullptr
  int N, d, r;
  Act act;
  TileMap map;
};

// Tensor-core kernels: 64-row tiles, 8 warps. A tile reads each weight matrix once, so the
// weights cost r/32 of x's traffic (from L2); x and out move once.
constexpr int kWmmaRows = 64;
constexpr int kWmmaWarps = 8;
constexpr int kChunk = 64;                              // columns of x (or dOut) staged per step
constexpr int kColFrags = kMaxFusedR / 16 / 2;          // accumulator fragments per warp in phase 1

__host__ __device__ constexpr size_t align128(size_t n) { return (n + 127) / 128 * 128; }

// Shared memory of the tensor-core kernels: the staged input chunk [64][kChunk+8], the staged
// weight chunk (forward: down rows [r][kChunk+8]; backward: up rows [kChunk][r+8]), h_pre or dh
// [64][r] fp32, h or dh_pre [64][r+8], and a 16x16 fp32 staging tile per warp.
template <typename T>
struct WmmaSmem {
  size_t in, w, hp, hs, stg;
  __host__ __device__ WmmaSmem(int r, bool backward) {
    in = align128(size_t(kWmmaRows) * (kChunk + 8) * sizeof(T));
    w = align128((backward ? size_t(kChunk) * (r + 8) : size_t(r) * (kChunk + 8)) * sizeof(T));
    hp = align128(size_t(kWmmaRows) * r * sizeof(float));
    hs = align128(size_t(kWmmaRows) * (r + 8) * sizeof(T));
    stg = size_t(kWmmaWarps) * 256 * sizeof(float);
  }
  __host__ __device__ size_t total() const { return in + w + hp + hs + stg; }
};

// Stages rows [row0, row0+rows) x columns [k0, k0+width) of a row-major matrix with leading
// dimension ld into shared memory (leading dimension sld), zero-filling the rest of the
// kChunk-wide chunk; 16-byte vector loads (width and k0 are multiples of 8).
template <typename T>
__device__ __forceinline__ void stageRows(T* dst, int sld, const T* src, size_t ld, const int* rowIds, int rows,
                                          int k0, int width) {
  constexpr int kVec = 16 / sizeof(T);
  for (int e = threadIdx.x; e < rows * (kChunk / kVec); e += blockDim.x) {
    int rr = e / (kChunk / kVec), cc = (e % (kChunk / kVec)) * kVec;
    int row = rowIds ? rowIds[rr] : rr;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row >= 0 && cc < width) v = *reinterpret_cast<const uint4*>(src + size_t(row) * ld + k0 + cc);
    *reinterpret_cast<uint4*>(dst + rr * sld + cc) = v;
  }
}

template <typename T>
union Vec8 {
  uint4 u;
  T v[8];
};

// A batched tile of rows routed to no adapter (index -1): out = residual (x unless given).
template <typename T>
__device__ void passThrough(const FwdParams<T>& p, const int* rows, int tileRows) {
  const T* res = p.res ? p.res : p.x;
  for (int rr = 0; rr < tileRows; rr++) {
    int row = rows[rr];
    if (row < 0) continue;
    for (int c = threadIdx.x; c < p.d; c += blockDim.x) p.out[size_t(row) * p.d + c] = res[size_t(row) * p.d + c];
  }
}

// Forward on tensor cores, bf16/fp16, d % 16 == 0, r % 16 == 0, r <= 256. Phase 1: h_pre[64, r]
// = x · downᵀ with x and down streamed through shared memory in 64-column chunks. Phase 2:
// bias and activation; h stays in shared memory. Phase 3: out[64, d] = residual + s·(h·upᵀ +
// b_up), each warp owning 16-column strips of all 64 rows, written once with 16-byte stores.
template <typename T>
__global__ void __launch_bounds__(256) fusedForwardWmma(FwdParams<T> p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const WmmaSmem<T> L(p.r, false);
  T* xs = reinterpret_cast<T*>(smem);
  T* ds = reinterpret_cast<T*>(smem + L.in);
  float* hp = reinterpret_cast<float*>(smem + L.in + L.w);
  T* hs = reinterpret_cast<T*>(smem + L.in + L.w + L.hp);
  float* stg = reinterpret_cast<float*>(smem + L.in + L.w + L.hp + L.hs);
  const int tile = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int d = p.d, r = p.r, xld = kChunk + 8, hld = r + 8, rFrags = r / 16;
  __shared__ int rows[kWmmaRows];
  if (threadIdx.x < kWmmaRows) rows[threadIdx.x] = p.map.row(tile, threadIdx.x, p.N);
  __syncthreads();
  const int k = p.map.adapter(tile);
  if (k < 0) {  // the whole block takes this branch: no barrier below is reached
    passThrough(p, rows, kWmmaRows);
    return;
  }
  const T* downW = p.downW + size_t(k) * r * d;
  const T* downB = p.downB + size_t(k) * r;
  const T* upW = p.upW + size_t(k) * d * r;
  const T* upB = p.upB + size_t(k) * d;

  // Phase 1: warp w computes row fragment w % 4 for column fragments w / 4, w / 4 + 2, …
  const int rowFrag = warp % 4, colGroup = warp / 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kColFrags];
#pragma unroll
  for (int q = 0; q < kColFrags; q++) wmma::fill_fragment(acc[q], 0.0f);
  for (int k0 = 0; k0 < d; k0 += kChunk) {
    int width = min(kChunk, d - k0);
    stageRows(xs, xld, p.x, d, rows, kWmmaRows, k0, width);
    stageRows<T>(ds, xld, downW, d, nullptr, r, k0, width);
    __syncthreads();
    for (int kk = 0; kk < width; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::load_matrix_sync(a, xs + rowFrag * 16 * xld + kk, xld);
#pragma unroll
      for (int q = 0; q < kColFrags; q++) {
        int cf = colGroup + 2 * q;
        if (cf < rFrags) {
          // down rows are downᵀ's columns: a column-major B with leading dimension xld
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, ds + cf * 16 * xld + kk, xld);
          wmma::mma_sync(acc[q], a, b, acc[q]);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int q = 0; q < kColFrags; q++) {
    int cf = colGroup + 2 * q;
    if (cf < rFrags) wmma::store_matrix_sync(hp + rowFrag * 16 * r + cf * 16, acc[q], r, wmma::mem_row_major);
  }
  __syncthreads();

  // Phase 2: h_pre += b_down (saved for backward); h = act(h_pre) as T for phase 3
  for (int i = threadIdx.x; i < kWmmaRows * r; i += blockDim.x) {
    int rr = i / r, c = i % r;
    float v = hp[i] + toF(downB[c]);
    if (p.hPre && rows[rr] >= 0) p.hPre[size_t(rows[rr]) * r + c] = v;
    hs[rr * hld + c] = fromF<T>(actForward(p.act, v));
  }
  __syncthreads();

  // Phase 3
  float* st = stg + warp * 256;
  const T* res = p.res ? p.res : p.x;
  const bool perAdapter = p.map.adapterScale != nullptr;
  const float adapterScale = perAdapter ? p.map.adapterScale[k] : 0.0f;
  for (int j = warp; j < d / 16; j += kWmmaWarps) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> z[4];
#pragma unroll
    for (int f = 0; f < 4; f++) wmma::fill_fragment(z[f], 0.0f);
    for (int kk = 0; kk < r; kk += 16) {
      // up is [d, r]: its rows j*16.. are upᵀ's columns, a column-major B with leading dimension r
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
      wmma::load_matrix_sync(b, upW + size_t(j) * 16 * r + kk, r);
#pragma unroll
      for (int f = 0; f < 4; f++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, hs + f * 16 * hld + kk, hld);
        wmma::mma_sync(z[f], a, b, z[f]);
      }
    }
    const int rr = lane / 2, c0 = (lane % 2) * 8, col = j * 16 + c0;
#pragma unroll
    for (int f = 0; f < 4; f++) {
      wmma::store_matrix_sync(st, z[f], 16, wmma::mem_row_major);
      __syncwarp();
      int row = rows[f * 16 + rr];
      if (row >= 0) {
        size_t i0 = size_t(row) * d + col;
        Vec8<T> rv, ov;
        rv.u = *reinterpret_cast<const uint4*>(res + i0);
        for (int e = 0; e < 8; e++) {
          int c = col + e;
          float s = perAdapter ? adapterScale : scaleAt(p.scaleT, p.scaleLen, p.scale, c);
          float zz = st[rr * 16 + c0 + e] + toF(upB[c]);
          ov.v[e] = fromF<T>(toF(rv.v[e]) + p.drop.at(i0 + e) * s * zz);
        }
        *reinterpret_cast<uint4*>(p.out + i0) = ov.u;
      }
      __syncwarp();
    }
  }
}

constexpr int kSimtRows = 16;
constexpr int kSimtChunk = 32;

// SIMT kernels: stages columns [k0, k0+width) of the tile's 16 rows of a row-major [*, d]
// matrix into shared memory as fp32 [16][kSimtChunk], zero-filling missing rows and columns.
template <typename T>
__device__ __forceinline__ void stageRowsF32(float* dst, const T* src, int d, const int* rows, int k0, int width) {
  for (int i = threadIdx.x; i < kSimtRows * kSimtChunk; i += blockDim.x) {
    int rr = i / kSimtChunk, cc = i % kSimtChunk;
    int row = rows[rr];
    dst[i] = (row >= 0 && cc < width) ? toF(src[size_t(row) * d + k0 + cc]) : 0.0f;
  }
}

template <typename T>
size_t simtForwardSmem(int r) {
  return (kSimtRows * kSimtChunk + r * (kSimtChunk + 1) + kSimtRows * r) * sizeof(float);
}

// Any dtype and shape with r <= 256 (fp32 math throughout): the fused path for fp32
// and for shapes the tensor-core kernel does not take. 256 threads per 16-row tile.
template <typename T>
__global__ void __launch_bounds__(256) fusedForwardSimt(FwdParams<T> p) {
  extern __shared__ __align__(128) unsigned char smem[];
  float* xs = reinterpret_cast<float*>(smem);        // [16][32]
  float* ds = xs + kSimtRows * kSimtChunk;           // [r][33]
  float* hs = ds + p.r * (kSimtChunk + 1);           // [16][r]
  const int tile = blockIdx.x, d = p.d, r = p.r;
  __shared__ int rows[kSimtRows];
  if (threadIdx.x < kSimtRows) rows[threadIdx.x] = p.map.row(tile, threadIdx.x, p.N);
  __syncthreads();
  const int k = p.map.adapter(tile);
  if (k < 0) {  // the whole block takes this branch
    passThrough(p, rows, kSimtRows);
    return;
  }
  const T* downW = p.downW + size_t(k) * r * d;
  const T* downB = p.downB + size_t(k) * r;
  const T* upW = p.upW + size_t(k) * d * r;
  const T* upB = p.upB + size_t(k) * d;

  constexpr int kPer = kSimtRows * kMaxFusedR / 256;  // outputs (row, j) per thread
  float acc[kPer];
#pragma unroll
  for (int q = 0; q < kPer; q++) acc[q] = 0.0f;
  for (int k0 = 0; k0 < d; k0 += kSimtChunk) {
    int width = min(kSimtChunk, d - k0);
    stageRowsF32(xs, p.x, d, rows, k0, width);
    for (int i = threadIdx.x; i < r * kSimtChunk; i += blockDim.x) {
      int j = i / kSimtChunk, cc = i % kSimtChunk;
      ds[j * (kSimtChunk + 1) + cc] = cc < width ? toF(downW[size_t(j) * d + k0 + cc]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kPer; q++) {
      int o = threadIdx.x + q * 256;
      if (o < kSimtRows * r) {
        int rr = o / r, j = o % r;
        float s = acc[q];
        for (int kk = 0; kk < width; kk++) s += xs[rr * kSimtChunk + kk] * ds[j * (kSimtChunk + 1) + kk];
        acc[q] = s;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int q = 0; q < kPer; q++) {
    int o = threadIdx.x + q * 256;
    if (o < kSimtRows * r) {
      int rr = o / r, j = o % r;
      float v = acc[q] + toF(downB[j]);
      if (p.hPre && rows[rr] >= 0) p.hPre[size_t(rows[rr]) * r + j] = v;
      hs[o] = actForward(p.act, v);
    }
  }
  __syncthreads();
  const T* res = p.res ? p.res : p.x;
  const float adapterScale = p.map.adapterScale ? p.map.adapterScale[k] : 0.0f;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float z[kSimtRows];
#pragma unroll
    for (int rr = 0; rr < kSimtRows; rr++) z[rr] = 0.0f;
    const T* u = upW + size_t(c) * r;
    for (int kk = 0; kk < r; kk++) {
      float w = toF(u[kk]);
#pragma unroll
      for (int rr = 0; rr < kSimtRows; rr++) z[rr] += hs[rr * r + kk] * w;
    }
    float b = toF(upB[c]);
    float s = p.map.adapterScale ? adapterScale : scaleAt(p.scaleT, p.scaleLen, p.scale, c);
#pragma unroll
    for (int rr = 0; rr < kSimtRows; rr++) {
      int row = rows[rr];
      if (row < 0) continue;
      size_t i = size_t(row) * d + c;
      p.out[i] = fromF<T>(toF(res[i]) + p.drop.at(i) * s * (z[rr] + b));
    }
  }
}

template <typename T>
struct BwdParams {
  const T* dOut;
  const float* hPre;
  const T *upW, *downW;
  float scale;
  T* dx;
  T* dHpreT;      // [N, r]
  float* dHpreF;  // [N, r]
  T* hAug;        // [N, r + 16]: h, then a column of ones (for dUpBias), then zeros
  int N, d, r;
  Act act;
  bool addDOut;
};

// Backward of the per-row chain on tensor cores (fixed scaling, no dropout), 64-row tiles:
// dh = s·dOut·up (dOut and up streamed through shared memory), dh_pre = dh ⊙ act'(h_pre),
// dx = dh_pre·down (+ dOut), written once. Also writes the small [N, r] tensors that the
// weight-gradient GEMMs need.
template <typename T>
__global__ void __launch_bounds__(256) fusedBackwardWmma(BwdParams<T> p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const WmmaSmem<T> L(p.r, true);
  T* gs = reinterpret_cast<T*>(smem);
  T* us = reinterpret_cast<T*>(smem + L.in);
  float* hp = reinterpret_cast<float*>(smem + L.in + L.w);
  T* hs = reinterpret_cast<T*>(smem + L.in + L.w + L.hp);
  float* stg = reinterpret_cast<float*>(smem + L.in + L.w + L.hp + L.hs);
  const int tile = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int d = p.d, r = p.r, gld = kChunk + 8, uld = r + 8, hld = r + 8, rFrags = r / 16;
  __shared__ int rows[kWmmaRows];
  if (threadIdx.x < kWmmaRows) {
    int row = tile * kWmmaRows + threadIdx.x;
    rows[threadIdx.x] = row < p.N ? row : -1;
  }
  __syncthreads();

  const int rowFrag = warp % 4, colGroup = warp / 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kColFrags];
#pragma unroll
  for (int q = 0; q < kColFrags; q++) wmma::fill_fragment(acc[q], 0.0f);
  for (int k0 = 0; k0 < d; k0 += kChunk) {
    int width = min(kChunk, d - k0);
    stageRows(gs, gld, p.dOut, d, rows, kWmmaRows, k0, width);
    // up rows k0..k0+width, all r columns: [kChunk][r+8]; rows past width are zero
    constexpr int kVec = 16 / sizeof(T);
    for (int e = threadIdx.x; e < kChunk * (r / kVec); e += blockDim.x) {
      int kr = e / (r / kVec), cc = (e % (r / kVec)) * kVec;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (kr < width) v = *reinterpret_cast<const uint4*>(p.upW + size_t(k0 + kr) * r + cc);
      *reinterpret_cast<uint4*>(us + kr * uld + cc) = v;
    }
    __syncthreads();
    for (int kk = 0; kk < width; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::load_matrix_sync(a, gs + rowFrag * 16 * gld + kk, gld);
#pragma unroll
      for (int q = 0; q < kColFrags; q++) {
        int cf = colGroup + 2 * q;
        if (cf < rFrags) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
          wmma::load_matrix_sync(b, us + kk * uld + cf * 16, uld);
          wmma::mma_sync(acc[q], a, b, acc[q]);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int q = 0; q < kColFrags; q++) {
    int cf = colGroup + 2 * q;
    if (cf < rFrags) wmma::store_matrix_sync(hp + rowFrag * 16 * r + cf * 16, acc[q], r, wmma::mem_row_major);
  }
  __syncthreads();
  const int augLd = r + 16;
  for (int i = threadIdx.x; i < kWmmaRows * augLd; i += blockDim.x) {
    int rr = i / augLd, c = i % augLd;
    int row = rows[rr];
    if (c < r) {
      float pre = row >= 0 ? p.hPre[size_t(row) * r + c] : 0.0f;
      float g = p.scale * hp[rr * r + c] * actGrad(p.act, pre);
      hs[rr * hld + c] = fromF<T>(g);
      if (row >= 0) {
        p.dHpreT[size_t(row) * r + c] = fromF<T>(g);
        p.dHpreF[size_t(row) * r + c] = g;
        p.hAug[size_t(row) * augLd + c] = fromF<T>(actForward(p.act, pre));
      }
    } else if (row >= 0) {
      p.hAug[size_t(row) * augLd + c] = fromF<T>(c == r ? 1.0f : 0.0f);
    }
  }
  __syncthreads();

  // dx[64, d] = dh_pre · down (+ dOut): down is [r, d] row-major = B (K = r, N = d), ld d
  float* st = stg + warp * 256;
  for (int j = warp; j < d / 16; j += kWmmaWarps) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> z[4];
#pragma unroll
    for (int f = 0; f < 4; f++) wmma::fill_fragment(z[f], 0.0f);
    for (int kk = 0; kk < r; kk += 16) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
      wmma::load_matrix_sync(b, p.downW + size_t(kk) * d + j * 16, d);
#pragma unroll
      for (int f = 0; f < 4; f++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, hs + f * 16 * hld + kk, hld);
        wmma::mma_sync(z[f], a, b, z[f]);
      }
    }
    const int rr = lane / 2, c0 = (lane % 2) * 8;
#pragma unroll
    for (int f = 0; f < 4; f++) {
      wmma::store_matrix_sync(st, z[f], 16, wmma::mem_row_major);
      __syncwarp();
      int row = rows[f * 16 + rr];
      if (row >= 0) {
        size_t i0 = size_t(row) * d + j * 16 + c0;
        Vec8<T> gv, ov;
        if (p.addDOut) gv.u = *reinterpret_cast<const uint4*>(p.dOut + i0);
        for (int e = 0; e < 8; e++) {
          float v = st[rr * 16 + c0 + e];
          if (p.addDOut) v += toF(gv.v[e]);
          ov.v[e] = fromF<T>(v);
        }
        *reinterpret_cast<uint4*>(p.dx + i0) = ov.u;
      }
      __syncwarp();
    }
  }
}

template <typename T>
size_t simtBackwardSmem(int r) {
  return (kSimtRows * kSimtChunk + kSimtChunk * (r + 1) + kSimtRows * r) * sizeof(float);
}

// The backward's per-row chain for any dtype and shape with r <= 256 (fp32 math; the fused
// backward for fp32 and for shapes the tensor-core kernel does not take), 16-row tiles:
// dh = s·dOut·up, dh_pre = dh ⊙ act'(h_pre), dx = dh_pre·down (+ dOut). Same outputs as
// fusedBackwardWmma, so the host's weight-gradient GEMMs are shared.
template <typename T>
__global__ void __launch_bounds__(256) fusedBackwardSimt(BwdParams<T> p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int d = p.d, r = p.r;
  float* gs = reinterpret_cast<float*>(smem);   // [16][32] dOut chunk
  float* us = gs + kSimtRows * kSimtChunk;        // [32][r+1] up rows of the chunk
  float* hs = us + kSimtChunk * (r + 1);          // [16][r] dh_pre
  __shared__ int rows[kSimtRows];
  if (threadIdx.x < kSimtRows) {
    int row = blockIdx.x * kSimtRows + threadIdx.x;
    rows[threadIdx.x] = row < p.N ? row : -1;
  }
  __syncthreads();

  constexpr int kPer = kSimtRows * kMaxFusedR / 256;  // outputs (row, j) per thread
  float acc[kPer];
#pragma unroll
  for (int q = 0; q < kPer; q++) acc[q] = 0.0f;
  for (int k0 = 0; k0 < d; k0 += kSimtChunk) {
    int width = min(kSimtChunk, d - k0);
    stageRowsF32(gs, p.dOut, d, rows, k0, width);
    for (int i = threadIdx.x; i < kSimtChunk * r; i += blockDim.x) {
      int kk = i / r, j = i % r;
      us[kk * (r + 1) + j] = kk < width ? toF(p.upW[size_t(k0 + kk) * r + j]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kPer; q++) {
      int o = threadIdx.x + q * 256;
      if (o < kSimtRows * r) {
        int rr = o / r, j = o % r;
        float s = acc[q];
        for (int kk = 0; kk < width; kk++) s += gs[rr * kSimtChunk + kk] * us[kk * (r + 1) + j];
        acc[q] = s;
      }
    }
    __syncthreads();
  }
  const int augLd = r + 16;
#pragma unroll
  for (int q = 0; q < kPer; q++) {
    int o = threadIdx.x + q * 256;
    if (o < kSimtRows * r) {
      int rr = o / r, j = o % r;
      int row = rows[rr];
      float pre = row >= 0 ? p.hPre[size_t(row) * r + j] : 0.0f;
      float g = p.scale * acc[q] * actGrad(p.act, pre);
      hs[o] = g;
      if (row >= 0) {
        p.dHpreT[size_t(row) * r + j] = fromF<T>(g);
        p.dHpreF[size_t(row) * r + j] = g;
        p.hAug[size_t(row) * augLd + j] = fromF<T>(actForward(p.act, pre));
      }
    }
  }
  // the [1 | 0…] columns of hAug
  for (int i = threadIdx.x; i < kSimtRows * 16; i += blockDim.x) {
    int rr = i / 16, c = r + i % 16;
    if (rows[rr] >= 0) p.hAug[size_t(rows[rr]) * augLd + c] = fromF<T>(c == r ? 1.0f : 0.0f);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float z[kSimtRows];
#pragma unroll
    for (int rr = 0; rr < kSimtRows; rr++) z[rr] = 0.0f;
    for (int k = 0; k < r; k++) {
      float w = toF(p.downW[size_t(k) * d + c]);
#pragma unroll
      for (int rr = 0; rr < kSimtRows; rr++) z[rr] += hs[rr * r + k] * w;
    }
#pragma unroll
    for (int rr = 0; rr < kSimtRows; rr++) {
      int row = rows[rr];
      if (row < 0) continue;
      size_t i = size_t(row) * d + c;
      float v = z[rr];
      if (p.addDOut) v += toF(p.dOut[i]);
      p.dx[i] = fromF<T>(v);
    }
  }
}

// ---------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------

bool tensorCoreType(DType t) { return t == DType::BF16 || t == DType::F16; }

// Shared memory one block may opt in to: 163 KB on sm_80/87 and 227 KB on sm_90 hold the
// tensor-core kernels up to r = 256, but sm_86/89/120 give 99 KB, enough only up to r = 144.
size_t smemOptin(int dev) {
  int v = 0;
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "adapter",
        "cudaDeviceGetAttribute");
  return size_t(v);
}

bool wmmaFits(const AdapterArgs& a, int dev) {
  if (!tensorCoreType(a.dtype) || a.d % 16 != 0 || a.r % 16 != 0 || a.r > kMaxFusedR) return false;
  // dynamic (the larger of the forward and backward layouts) + the static rows[] array
  size_t need = std::max(WmmaSmem<__half>(a.r, false).total(), WmmaSmem<__half>(a.r, true).total()) +
                kWmmaRows * sizeof(int);
  return need <= smemOptin(dev);
}

bool fusedForwardFits(const AdapterArgs& a) { return a.r <= kMaxFusedR; }

// The fused backward: fixed scaling and no dropout (then the weight-gradient GEMMs can read
// dOut itself); tensor cores where they fit, else the SIMT kernel (r <= 256).
bool fusedBackwardFits(const AdapterArgs& a, int dev) {
  (void)dev;
  return !a.scaleT && a.dropout <= 0.0f && a.r <= kMaxFusedR && a.dtype != DType::I32;
}

template <typename T>
FwdParams<T> fwdParams(const AdapterArgs& a, void* out, float* hPre) {
  FwdParams<T> p{static_cast<const T*>(a.x), static_cast<const T*>(a.residual), static_cast<const T*>(a.downW),
                 static_cast<const T*>(a.downB), static_cast<const T*>(a.upW), static_cast<const T*>(a.upB),
                 static_cast<const T*>(a.scaleT), a.scaleLen, a.scale, DropoutParams(a), static_cast<T*>(out), hPre,
                 a.N, a.d, a.r, a.act, TileMap{}};
  return p;
}

// Rows per tile of the fused forward kernel that takes this shape.
int fusedTileRows(const AdapterArgs& a, int dev) { return wmmaFits(a, dev) ? kWmmaRows : kSimtRows; }

// Launches the fused forward over `tiles` tiles of fusedTileRows(a, dev) rows (map gives rows and adapters).
void launchFusedForward(int dev, const AdapterArgs& a, void* out, float* hPre, int tiles, TileMap map,
                        const char* op) {
  if (tiles == 0) return;
  map.tileRows = fusedTileRows(a, dev);
  if (wmmaFits(a, dev)) {
    dispatchFloat(a.dtype, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value) {
        FwdParams<T> p = fwdParams<T>(a, out, hPre);
        p.map = map;
        size_t sm = WmmaSmem<T>(a.r, false).total();
        check(cudaFuncSetAttribute(fusedForwardWmma<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)), op,
              "cudaFuncSetAttribute");
        fusedForwardWmma<T><<<tiles, kWmmaWarps * 32, sm, S(dev)>>>(p);
      }
    });
  } else {
    dispatchFloat(a.dtype, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_same<T, int>::value) {
        FwdParams<T> p = fwdParams<T>(a, out, hPre);
        p.map = map;
        size_t sm = simtForwardSmem<T>(a.r);
        check(cudaFuncSetAttribute(fusedForwardSimt<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)), op,
              "cudaFuncSetAttribute");
        fusedForwardSimt<T><<<tiles, 256, sm, S(dev)>>>(p);
      }
    });
  }
  checkLaunch(op);
}

void forwardCublas(int dev, const AdapterArgs& a, void* out, float* hPre) {
  const char* op = "adapterForward";
  size_t es = dtypeSize(a.dtype), nr = size_t(a.N) * a.r, nd = size_t(a.N) * a.d;
  gemmEx(dev, a.dtype, DType::F32, false, true, a.N, a.r, a.d, 1.0f, a.x, a.d, 0, a.downW, a.d, 0, 0.0f, hPre, a.r, 0,
         1, op);
  Scratch h(dev, nr * es), z(dev, nd * es);
  dispatchFloat(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    biasActKernel<T><<<blocksFor(nr, kThreads), kThreads, 0, S(dev)>>>(hPre, static_cast<const T*>(a.downB),
                                                                      h.as<T>(), nr, a.r, a.act);
  });
  checkLaunch(op);
  gemm(dev, a.dtype, false, true, a.N, a.d, a.r, 1.0f, h.p, a.r, 0, a.upW, a.r, 0, 0.0f, z.p, a.d, 0, 1, op);
  dispatchFloat(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* res = static_cast<const T*>(a.residual ? a.residual : a.x);
    epilogueKernel<T><<<blocksFor(nd, kThreads), kThreads, 0, S(dev)>>>(
        z.as<T>(), static_cast<const T*>(a.upB), res, static_cast<const T*>(a.scaleT), a.scaleLen, a.scale,
        DropoutParams(a), static_cast<T*>(out), nd, a.d);
  });
  checkLaunch(op);
}

void backwardCublas(int dev, const AdapterArgs& a, const void* dOut, const float* hPre, const AdapterGrads& g) {
  const char* op = "adapterBackward";
  size_t es = dtypeSize(a.dtype), nr = size_t(a.N) * a.r, nd = size_t(a.N) * a.d;
  Scratch gs(dev, nd * es), h(dev, nr * es), dH(dev, nr * 4), dHpreT(dev, nr * es);
  std::unique_ptr<Scratch> gm;
  if (g.dScale) gm.reset(new Scratch(dev, nd * 4));
  dispatchFloat(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    gradPrepKernel<T><<<blocksFor(nd, kThreads), kThreads, 0, S(dev)>>>(
        static_cast<const T*>(dOut), static_cast<const T*>(a.scaleT), a.scaleLen, a.scale, DropoutParams(a),
        gs.as<T>(), gm ? gm->as<float>() : nullptr, nd, a.d);
    actKernel<T><<<blocksFor(nr, kThreads), kThreads, 0, S(dev)>>>(hPre, h.as<T>(), nr, a.act);
  });
  checkLaunch(op);
  if (g.dScale) {  // dScale = Σ gm ⊙ (h·upᵀ + b_up)
    Scratch z(dev, nd * es), perChannel(dev, size_t(a.d) * 4);
    gemm(dev, a.dtype, false, true, a.N, a.d, a.r, 1.0f, h.p, a.r, 0, a.upW, a.r, 0, 0.0f, z.p, a.d, 0, 1, op);
    dispatchFloat(a.dtype, [&](auto tag) {
      using T = decltype(tag);
      float* target = a.scaleLen == 1 ? perChannel.as<float>() : g.dScale;
      colReduce<float, T>(dev, gm->as<float>(), z.as<T>(), static_cast<const T*>(a.upB), target, a.N, a.d);
      if (a.scaleLen == 1) sumKernel<<<1, 256, 0, S(dev)>>>(perChannel.as<float>(), a.d, g.dScale);
    });
    checkLaunch(op);
  }
  // dUp = gsᵀ·h [d, r]; dUpBias = Σ gs
  gemmEx(dev, a.dtype, DType::F32, true, false, a.d, a.r, a.N, 1.0f, gs.p, a.d, 0, h.p, a.r, 0, 0.0f, g.dUpW, a.r, 0,
         1, op);
  dispatchFloat(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    colReduce<T, float>(dev, gs.as<T>(), nullptr, nullptr, g.dUpB, a.N, a.d);
  });
  // dh = gs·up [N, r]; dh_pre = dh ⊙ act'(h_pre)
  gemmEx(dev, a.dtype, DType::F32, false, false, a.N, a.r, a.d, 1.0f, gs.p, a.d, 0, a.upW, a.r, 0, 0.0f, dH.p, a.r, 0,
         1, op);
  dispatchFloat(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    actGradKernel<T><<<blocksFor(nr, kThreads), kThreads, 0, S(dev)>>>(dH.as<float>(), hPre, dHpreT.as<T>(), nr,
                                                                      a.act);
  });
  checkLaunch(op);
  // dDown = dh_preᵀ·x [r, d]; dDownBias = Σ dh_pre
  gemmEx(dev, a.dtype, DType::F32, true, false, a.r, a.d, a.N, 1.0f, dHpreT.p, a.r, 0, a.x, a.d, 0, 0.0f, g.dDownW,
         a.d, 0, 1, op);
  colReduce<float, float>(dev, dH.as<float>(), nullptr, nullptr, g.dDownB, a.N, a.r);
  // dx = dh_pre·down (+ dOut)
  if (g.addDOutToDx) copyDeviceToDevice(dev, dOut, dev, g.dx, nd * es, op);
  gemm(dev, a.dtype, false, false, a.N, a.d, a.r, 1.0f, dHpreT.p, a.r, 0, a.downW, a.d, 0,
       g.addDOutToDx ? 1.0f : 0.0f, g.dx, a.d, 0, 1, op);
  checkLaunch(op);
}

void backwardFused(int dev, const AdapterArgs& a, const void* dOut, const float* hPre, const AdapterGrads& g) {
  const char* op = "adapterBackward";
  size_t es = dtypeSize(a.dtype), nr = size_t(a.N) * a.r;
  int augLd = a.r + 16;
  Scratch dHpreT(dev, nr * es), dHpreF(dev, nr * 4), hAug(dev, size_t(a.N) * augLd * es),
      upAug(dev, size_t(a.d) * augLd * 4);
  const bool tensorCores = wmmaFits(a, dev);
  const int tileRows = tensorCores ? kWmmaRows : kSimtRows;
  int tiles = (a.N + tileRows - 1) / tileRows;
  dispatchFloat(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same<T, int>::value) {
      BwdParams<T> p{static_cast<const T*>(dOut), hPre, static_cast<const T*>(a.upW), static_cast<const T*>(a.downW),
                     a.scale, static_cast<T*>(g.dx), dHpreT.as<T>(), dHpreF.as<float>(), hAug.as<T>(), a.N, a.d, a.r,
                     a.act, g.addDOutToDx};
      if (!tiles) return;
      if constexpr (std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value) {
        if (tensorCores) {
          size_t sm = WmmaSmem<T>(a.r, true).total();
          check(cudaFuncSetAttribute(fusedBackwardWmma<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)), op,
                "cudaFuncSetAttribute");
          fusedBackwardWmma<T><<<tiles, kWmmaWarps * 32, sm, S(dev)>>>(p);
          return;
        }
      }
      size_t sm = simtBackwardSmem<T>(a.r);
      check(cudaFuncSetAttribute(fusedBackwardSimt<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)), op,
            "cudaFuncSetAttribute");
      fusedBackwardSimt<T><<<tiles, 256, sm, S(dev)>>>(p);
    }
  });
  checkLaunch(op);
  // [dUp | dUpBias] = s·dOutᵀ·[h | 1]: one GEMM reads dOut once for both
  gemmEx(dev, a.dtype, DType::F32, true, false, a.d, augLd, a.N, a.scale, dOut, a.d, 0, hAug.p, augLd, 0, 0.0f,
         upAug.p, augLd, 0, 1, op);
  splitAugKernel<<<blocksFor(size_t(a.d) * augLd, kThreads), kThreads, 0, S(dev)>>>(upAug.as<float>(), a.d, a.r,
                                                                                    g.dUpW, g.dUpB);
  checkLaunch(op);
  gemmEx(dev, a.dtype, DType::F32, true, false, a.r, a.d, a.N, 1.0f, dHpreT.p, a.r, 0, a.x, a.d, 0, 0.0f, g.dDownW,
         a.d, 0, 1, op);
  colReduce<float, float>(dev, dHpreF.as<float>(), nullptr, nullptr, g.dDownB, a.N, a.r);
  checkLaunch(op);
}

std::string fitError(const AdapterArgs& a, const char* what) {
  return std::string(what) + " (d=" + std::to_string(a.d) + ", r=" + std::to_string(a.r) + ", " + dtypeName(a.dtype) +
         (a.scaleT ? ", learned scaling" : "") + (a.dropout > 0 ? ", dropout" : "") + ")";
}

}  // namespace

std::string adapterForward(int dev, const AdapterArgs& a, void* out, float* hPre, const std::string& path) {
  DeviceGuard guard(dev, "adapterForward");
  bool fused = path == "fused" || (path == "auto" && fusedForwardFits(a));
  if (path == "fused" && !fusedForwardFits(a))
    throw std::runtime_error(fitError(a, "adapterForward: the fused path needs r <= 256"));
  if (a.N == 0) return fused ? "fused" : "cublas";
  if (fused) {
    int rowsPerTile = fusedTileRows(a, dev);
    launchFusedForward(dev, a, out, hPre, (a.N + rowsPerTile - 1) / rowsPerTile, TileMap{}, "adapterForward");
    return wmmaFits(a, dev) ? "fused" : "fused-simt";
  }
  forwardCublas(dev, a, out, hPre);
  return "cublas";
}

std::string adapterBackward(int dev, const AdapterArgs& a, const void* dOut, const float* hPre,
                            const AdapterGrads& g, const std::string& path) {
  DeviceGuard guard(dev, "adapterBackward");
  // auto takes the fused backward where tensor cores run it; 'fused' also takes the SIMT kernel.
  bool fused = path == "fused" || (path == "auto" && fusedBackwardFits(a, dev) && wmmaFits(a, dev));
  if (path == "fused" && !fusedBackwardFits(a, dev))
    throw std::runtime_error(fitError(a, "adapterBackward: the fused path needs r <= 256, fixed scaling, no dropout"));
  // N = 0 runs through: the GEMMs over K = N write zeros and the column sums give 0, as on the CPU.
  if (fused) backwardFused(dev, a, dOut, hPre, g);
  else backwardCublas(dev, a, dOut, hPre, g);
  return fused ? (wmmaFits(a, dev) ? "fused" : "fused-simt") : "cublas";
}

std::string adapterForwardBatched(int dev, const BatchedArgs& b, void* out, const std::string& path) {
  const char* op = "adapterForwardBatched";
  const AdapterArgs& a = b.base;
  if (path == "cublas") throw std::runtime_error("adapterForwardBatched: only the fused path serves many adapters");
  if (!fusedForwardFits(a)) throw std::runtime_error(fitError(a, "adapterForwardBatched: CUDA needs r <= 256"));
  DeviceGuard guard(dev, op);
  // Rows grouped by adapter into tiles (a counting sort on the host), one launch for all.
  // rows[k + 1]: the rows of adapter k; rows[0]: the rows routed to none (-1), which get
  // pass-through tiles that copy x, so every row is read and written once.
  std::vector<std::vector<int>> rows(b.numAdapters + 1);
  for (int n = 0; n < a.N; n++) rows[b.rowAdapter[n] + 1].push_back(n);
  std::vector<int> rowIdx, tileAdapter;
  const size_t rowsPerTile = size_t(fusedTileRows(a, dev));
  for (int k = -1; k < b.numAdapters; k++)
    for (size_t i = 0; i < rows[k + 1].size(); i += rowsPerTile) {
      tileAdapter.push_back(k);
      for (size_t j = 0; j < rowsPerTile; j++) rowIdx.push_back(i + j < rows[k + 1].size() ? rows[k + 1][i + j] : -1);
    }
  int tiles = int(tileAdapter.size());
  if (tiles == 0) return wmmaFits(a, dev) ? "fused" : "fused-simt";
  // One upload for the routing table: row indices, then each tile's adapter, then the scales.
  std::vector<int32_t> table(rowIdx);
  table.insert(table.end(), tileAdapter.begin(), tileAdapter.end());
  size_t scalesAt = table.size();
  table.resize(scalesAt + b.numAdapters);
  std::memcpy(table.data() + scalesAt, b.scales, size_t(b.numAdapters) * 4);
  Scratch dTable(dev, table.size() * 4);
  copyHostToDevice(dev, dTable.p, table.data(), table.size() * 4, op);
  const int* base = dTable.as<int>();
  TileMap map{base, base + rowIdx.size(), reinterpret_cast<const float*>(base + scalesAt), 0};
  AdapterArgs fa = a;  // the residual, when given, stays
  fa.scaleT = nullptr;
  fa.dropout = 0.0f;
  launchFusedForward(dev, fa, out, nullptr, tiles, map, op);
  return wmmaFits(a, dev) ? "fused" : "fused-simt";
}

}  // namespace cuda
}  // namespace fa
