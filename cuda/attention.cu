// Fused attention on CUDA (the meaning of each function is its CPU reference in
// native/cpu/attention.cc), tiled so that no [Tq, Tk] matrix is stored (flash-attention style,
// SIMT, fp32 accumulation; head size D <= 128):
//   forward:  a block of 4 warps per 16 query rows of one head; 32-key tiles of K and V staged in
//             shared memory; each warp keeps its rows' running max, sum and output (online softmax);
//             writes out and lse = max + log(sum).
//   backward: Di = Σ dOut·out per row; then one warp per 32-key tile of one K/V head walks every
//             query row of its G query heads, recomputing p = exp(scale·q·k − lse), and accumulates
//             that tile's dK and dV in shared memory (each lane owns one key's rows: no atomics);
//             and one warp per query row accumulates its dQ over the key tiles.
#include <cmath>
#include <stdexcept>
#include <string>

#include "allocator.h"
#include "attention.h"
#include "common.cuh"

namespace fa {
namespace cuda {

namespace {

constexpr int kTile = 32;      // keys per tile: one per lane
constexpr int kRows = 16;      // query rows per forward block
constexpr int kWarps = 4;      // warps per forward / dQ block
constexpr int kMaxChunks = 4;  // D / 32 output dims per lane (D <= 128)

__device__ __forceinline__ bool maskOnDev(const void* m, int maskSize, bool maskInt, size_t i) {
  if (maskSize == 2) return (static_cast<const unsigned short*>(m)[i] & 0x7fffu) != 0;
  unsigned b = static_cast<const unsigned*>(m)[i];
  return maskInt ? b != 0 : (b & 0x7fffffffu) != 0;
}

struct Dev {
  AttentionShape s;
  const void* mask;
  int maskSize;
  bool maskInt;
  __device__ bool sees(size_t b, size_t i, size_t j) const {
    if (j >= s.Tk) return false;
    if (s.causal && j > i + (s.Tk - s.Tq)) return false;
    if (s.segments && s.segments[b * s.Tk + i] != s.segments[b * s.Tk + j]) return false;
    return !mask || maskOnDev(mask, maskSize, maskInt, b * s.stride() + j);
  }
};

// grid (ceil(Tq / kRows), B·Hq), block kWarps·32, dynamic shared: (kRows + 2·kTile)·(D + 1) floats.
template <typename T>
__global__ void attentionForwardKernel(const T* q, const T* k, const T* v, T* out, float* lse, Dev a) {
  extern __shared__ float sm[];
  const AttentionShape& s = a.s;
  const size_t D = s.D, P = D + 1;  // padded rows: lanes reading different rows hit different banks
  float* Qs = sm;
  float* Ks = Qs + kRows * P;
  float* Vs = Ks + kTile * P;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const size_t bh = blockIdx.y, b = bh / s.Hq, h = bh % s.Hq, kvh = b * s.Hkv + h / (s.Hq / s.Hkv);
  const size_t i0 = size_t(blockIdx.x) * kRows;
  for (size_t e = threadIdx.x; e < kRows * D; e += blockDim.x) {
    size_t r = e / D, d = e % D;
    Qs[r * P + d] = i0 + r < s.Tq ? toF(q[(bh * s.Tq + i0 + r) * D + d]) : 0.0f;
  }
  float m[kRows / kWarps], l[kRows / kWarps], acc[kRows / kWarps][kMaxChunks];
  for (int r = 0; r < kRows / kWarps; r++) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    for (int c = 0; c < kMaxChunks; c++) acc[r][c] = 0.0f;
  }
  // keys beyond the last row's causal horizon are never seen by this block
  size_t last = i0 + kRows - 1 < s.Tq ? i0 + kRows - 1 : s.Tq - 1;
  size_t kEnd = s.causal ? (last + (s.Tk - s.Tq) + 1 < s.Tk ? last + (s.Tk - s.Tq) + 1 : s.Tk) : s.Tk;
  for (size_t j0 = 0; j0 < kEnd; j0 += kTile) {
    __syncthreads();  // the previous tile is done with (and Qs is written, the first time)
    for (size_t e = threadIdx.x; e < kTile * D; e += blockDim.x) {
      size_t r = e / D, d = e % D, j = j0 + r;
      Ks[r * P + d] = j < s.Tk ? toF(k[(kvh * s.stride() + j) * D + d]) : 0.0f;
      Vs[r * P + d] = j < s.Tk ? toF(v[(kvh * s.stride() + j) * D + d]) : 0.0f;
    }
    __syncthreads();
    for (int r = 0; r < kRows / kWarps; r++) {
      const int row = warp + kWarps * r;  // this warp's rows: warp, warp + 4, ...
      const size_t i = i0 + row;
      if (i >= s.Tq) break;
      float sc = -INFINITY;
      if (a.sees(b, i, j0 + lane)) {
        float dot = 0.0f;
        for (size_t d = 0; d < D; d++) dot += Qs[row * P + d] * Ks[lane * P + d];
        sc = s.scale * dot;
      }
      float tileMax = sc;
      for (int o = 16; o > 0; o >>= 1) tileMax = fmaxf(tileMax, __shfl_xor_sync(0xffffffffu, tileMax, o));
      float mNew = fmaxf(m[r], tileMax);
      if (mNew == -INFINITY) continue;  // nothing seen yet
      float p = sc == -INFINITY ? 0.0f : __expf(sc - mNew);
      float corr = m[r] == -INFINITY ? 0.0f : __expf(m[r] - mNew);
      float ps = p;
      for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
      l[r] = l[r] * corr + ps;
      m[r] = mNew;
      for (int c = 0; c < kMaxChunks; c++) acc[r][c] *= corr;
      for (int j = 0; j < kTile; j++) {
        float pj = __shfl_sync(0xffffffffu, p, j);
        if (pj == 0.0f) continue;
        for (int c = 0; c < kMaxChunks; c++) {
          size_t d = lane + 32 * c;
          if (d < D) acc[r][c] += pj * Vs[j * P + d];
        }
      }
    }
  }
  for (int r = 0; r < kRows / kWarps; r++) {
    const size_t i = i0 + warp + kWarps * r;
    if (i >= s.Tq) break;
    float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    for (int c = 0; c < kMaxChunks; c++) {
      size_t d = lane + 32 * c;
      if (d < D) out[(bh * s.Tq + i) * D + d] = fromF<T>(acc[r][c] * inv);
    }
    if (lane == 0) lse[bh * s.Tq + i] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
  }
}

// Di = Σ_d dOut·out per row: one warp per row.
template <typename T>
__global__ void attentionDeltaKernel(const T* out, const T* dOut, float* delta, size_t rows, size_t D) {
  const int lane = threadIdx.x & 31;
  size_t nWarps = (size_t(gridDim.x) * blockDim.x) >> 5;
  for (size_t r = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += nWarps) {
    float acc = 0.0f;
    for (size_t d = lane; d < D; d += 32) acc += toF(out[r * D + d]) * toF(dOut[r * D + d]);
    acc = warpSum(acc);
    if (lane == 0) delta[r] = acc;
  }
}

// grid (ceil(Tk / kTile), B·Hkv), one warp; dynamic shared: 4·kTile·(D + 1) + 2·D floats.
template <typename T>
__global__ void attentionDkDvKernel(const T* q, const T* k, const T* v, const T* dOut, const float* lse,
                                    const float* delta, T* dk, T* dv, Dev a) {
  extern __shared__ float sm[];
  const AttentionShape& s = a.s;
  const size_t D = s.D, P = D + 1, G = s.Hq / s.Hkv;
  float* Ks = sm;
  float* Vs = Ks + kTile * P;
  float* dKs = Vs + kTile * P;
  float* dVs = dKs + kTile * P;
  float* qi = dVs + kTile * P;
  float* doi = qi + D;
  const int lane = threadIdx.x;
  const size_t bk = blockIdx.y, b = bk / s.Hkv, kvh = bk % s.Hkv, j0 = size_t(blockIdx.x) * kTile, j = j0 + lane;
  for (size_t e = lane; e < kTile * D; e += 32) {
    size_t r = e / D, d = e % D;
    bool in = j0 + r < s.Tk;
    Ks[r * P + d] = in ? toF(k[(bk * s.Tk + j0 + r) * D + d]) : 0.0f;
    Vs[r * P + d] = in ? toF(v[(bk * s.Tk + j0 + r) * D + d]) : 0.0f;
    dKs[r * P + d] = 0.0f;
    dVs[r * P + d] = 0.0f;
  }
  // the first query that can see key j0 (causal): i >= j0 − (Tk − Tq)
  size_t iStart = s.causal && j0 > s.Tk - s.Tq ? j0 - (s.Tk - s.Tq) : 0;
  for (size_t g = 0; g < G; g++) {
    const size_t bh = b * s.Hq + kvh * G + g;
    for (size_t i = iStart; i < s.Tq; i++) {
      const float li = lse[bh * s.Tq + i];
      __syncwarp();
      for (size_t d = lane; d < D; d += 32) {
        qi[d] = toF(q[(bh * s.Tq + i) * D + d]);
        doi[d] = toF(dOut[(bh * s.Tq + i) * D + d]);
      }
      __syncwarp();
      if (li == -INFINITY || !a.sees(b, i, j)) continue;
      float dot = 0.0f, dp = 0.0f;
      for (size_t d = 0; d < D; d++) {
        dot += qi[d] * Ks[lane * P + d];
        dp += doi[d] * Vs[lane * P + d];
      }
      float p = __expf(s.scale * dot - li);
      float ds = p * (dp - delta[bh * s.Tq + i]) * s.scale;
      for (size_t d = 0; d < D; d++) {
        dVs[lane * P + d] += p * doi[d];
        dKs[lane * P + d] += ds * qi[d];
      }
    }
  }
  __syncwarp();
  for (size_t e = lane; e < kTile * D; e += 32) {
    size_t r = e / D, d = e % D;
    if (j0 + r < s.Tk) {
      dk[(bk * s.Tk + j0 + r) * D + d] = fromF<T>(dKs[r * P + d]);
      dv[(bk * s.Tk + j0 + r) * D + d] = fromF<T>(dVs[r * P + d]);
    }
  }
}

// grid (ceil(Tq / kWarps), B·Hq), kWarps warps, one query row each; dynamic shared: kWarps·2·D floats.
template <typename T>
__global__ void attentionDqKernel(const T* q, const T* k, const T* v, const T* dOut, const float* lse,
                                  const float* delta, T* dq, Dev a) {
  extern __shared__ float sm[];
  const AttentionShape& s = a.s;
  const size_t D = s.D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* qi = sm + warp * 2 * D;
  float* doi = qi + D;
  const size_t bh = blockIdx.y, b = bh / s.Hq, h = bh % s.Hq, kvh = b * s.Hkv + h / (s.Hq / s.Hkv);
  const size_t i = size_t(blockIdx.x) * kWarps + warp;
  if (i >= s.Tq) return;
  for (size_t d = lane; d < D; d += 32) {
    qi[d] = toF(q[(bh * s.Tq + i) * D + d]);
    doi[d] = toF(dOut[(bh * s.Tq + i) * D + d]);
  }
  __syncwarp();
  const float li = lse[bh * s.Tq + i], di = delta[bh * s.Tq + i];
  float acc[kMaxChunks] = {0.0f, 0.0f, 0.0f, 0.0f};
  size_t kEnd = s.causal ? i + (s.Tk - s.Tq) + 1 : s.Tk;
  if (li != -INFINITY)
    for (size_t j0 = 0; j0 < kEnd; j0 += kTile) {
      const size_t j = j0 + lane;
      float ds = 0.0f;
      if (a.sees(b, i, j)) {
        const T* kj = k + (kvh * s.Tk + j) * D;
        const T* vj = v + (kvh * s.Tk + j) * D;
        float dot = 0.0f, dp = 0.0f;
        for (size_t d = 0; d < D; d++) {
          dot += qi[d] * toF(kj[d]);
          dp += doi[d] * toF(vj[d]);
        }
        float p = __expf(s.scale * dot - li);
        ds = p * (dp - di) * s.scale;
      }
      for (int jj = 0; jj < kTile; jj++) {
        float dsj = __shfl_sync(0xffffffffu, ds, jj);
        if (dsj == 0.0f) continue;
        const T* kj = k + (kvh * s.Tk + j0 + jj) * D;
        for (int c = 0; c < kMaxChunks; c++) {
          size_t d = lane + 32 * c;
          if (d < D) acc[c] += dsj * toF(kj[d]);
        }
      }
    }
  for (int c = 0; c < kMaxChunks; c++) {
    size_t d = lane + 32 * c;
    if (d < D) dq[(bh * s.Tq + i) * D + d] = fromF<T>(acc[c]);
  }
}

Dev devArgs(const AttentionShape& s, const void* keyMask, DType maskType) {
  return Dev{s, keyMask, int(dtypeSize(maskType)), maskType == DType::I32};
}

void checkShape(const AttentionShape& s, const char* op) {
  if (s.D > kAttentionMaxD) throw std::runtime_error(std::string(op) + ": head size " + std::to_string(s.D) + " exceeds 128, the fused kernels' limit");
}

}  // namespace

void attention(int dev, DType t, const void* q, const void* k, const void* v, const void* keyMask, DType maskType,
               void* out, float* lse, const AttentionShape& s) {
  const char* op = "attention";
  checkShape(s, op);
  if (!s.B || !s.Hq || !s.Tq || !s.D) return;
  DeviceGuard g(dev, op);
  size_t smem = (kRows + 2 * kTile) * (s.D + 1) * sizeof(float);
  dim3 grid(unsigned((s.Tq + kRows - 1) / kRows), unsigned(s.B * s.Hq));
  Dev a = devArgs(s, keyMask, maskType);
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    check(cudaFuncSetAttribute(attentionForwardKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), op,
          "cudaFuncSetAttribute");
    attentionForwardKernel<T><<<grid, kWarps * 32, smem, S(dev)>>>(static_cast<const T*>(q), static_cast<const T*>(k),
                                                                    static_cast<const T*>(v), static_cast<T*>(out), lse, a);
  });
  checkLaunch(op);
}

void attentionBackward(int dev, DType t, const void* q, const void* k, const void* v, const void* out,
                       const void* dOut, const float* lse, const void* keyMask, DType maskType, void* dq, void* dk,
                       void* dv, const AttentionShape& s) {
  const char* op = "attentionBackward";
  checkShape(s, op);
  DeviceGuard g(dev, op);
  size_t rows = s.B * s.Hq * s.Tq;
  if (!s.D) return;
  Scratch delta(dev, rows * sizeof(float));
  Dev a = devArgs(s, keyMask, maskType);
  dispatchFloat(t, [&](auto tag) {
    using T = decltype(tag);
    const T* qq = static_cast<const T*>(q);
    const T* kk = static_cast<const T*>(k);
    const T* vv = static_cast<const T*>(v);
    const T* dd = static_cast<const T*>(dOut);
    if (rows) {
      attentionDeltaKernel<T><<<blocksFor(rows * 32, 256), 256, 0, S(dev)>>>(static_cast<const T*>(out), dd,
                                                                            delta.as<float>(), rows, s.D);
      checkLaunch(op);
    }
    if (s.Tk && s.B && s.Hkv) {
      size_t smem = (4 * kTile * (s.D + 1) + 2 * s.D) * sizeof(float);
      check(cudaFuncSetAttribute(attentionDkDvKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), op,
            "cudaFuncSetAttribute");
      dim3 grid(unsigned((s.Tk + kTile - 1) / kTile), unsigned(s.B * s.Hkv));
      attentionDkDvKernel<T><<<grid, 32, smem, S(dev)>>>(qq, kk, vv, dd, lse, delta.as<float>(), static_cast<T*>(dk),
                                                         static_cast<T*>(dv), a);
      checkLaunch(op);
    }
    if (rows) {
      dim3 grid(unsigned((s.Tq + kWarps - 1) / kWarps), unsigned(s.B * s.Hq));
      attentionDqKernel<T><<<grid, kWarps * 32, kWarps * 2 * s.D * sizeof(float), S(dev)>>>(
          qq, kk, vv, dd, lse, delta.as<float>(), static_cast<T*>(dq), a);
      checkLaunch(op);
    }
  });
}

}  // namespace cuda
}  // namespace fa
