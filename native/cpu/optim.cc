// AdamW and the global-norm helpers on host memory (see optim.h).
// Contraction into fused multiply-adds is off in this file: every step rounds to fp32 as
// torch's CPU kernels and the CUDA kernels (explicit __fmul_rn/__fadd_rn) do.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"

namespace fa {
namespace cpu {

namespace {

struct Chunk {
  size_t tensor, begin, end;
};

// The tensors cut into kOptimChunk-element chunks, in tensor order.
template <typename T>
std::vector<Chunk> chunksOf(const T* ts, size_t count) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < count; i++)
    for (size_t b = 0; b < ts[i].n; b += kOptimChunk) chunks.push_back({i, b, std::min(ts[i].n, b + kOptimChunk)});
  return chunks;
}

inline void loadAt(DType t, const void* p, size_t i, float* dst, size_t m) {
  loadToFloat(t, static_cast<const char*>(p) + i * dtypeSize(t), dst, m);
}
inline void storeAt(DType t, void* p, size_t i, const float* src, size_t m) {
  storeFromFloat(t, src, static_cast<char*>(p) + i * dtypeSize(t), m);
}

}  // namespace

void adamwStep(const AdamWTensor* ts, size_t count, const AdamWConsts& c) {
  std::vector<Chunk> chunks = chunksOf(ts, count);
  parallelFor(chunks.size(), 1, [&](size_t c0, size_t c1) {
    std::vector<float> g(kOptimChunk), p(kOptimChunk);
    for (size_t k = c0; k < c1; k++) {
      const Chunk& ch = chunks[k];
      const AdamWTensor& t = ts[ch.tensor];
      size_t m = ch.end - ch.begin;
      loadAt(t.gradType, t.grad, ch.begin, g.data(), m);
      // The fp32 value being optimized: the master copy, or the fp32 param itself.
      float* w = t.master ? t.master + ch.begin
                          : (t.paramType == DType::F32 ? static_cast<float*>(t.param) + ch.begin : nullptr);
      if (!w) {  // defensive: a low-precision param without master (the binding forbids it)
        loadAt(t.paramType, t.param, ch.begin, p.data(), m);
        w = p.data();
      }
      float* ea = t.expAvg + ch.begin;
      float* es = t.expAvgSq + ch.begin;
      for (size_t j = 0; j < m; j++) {
        float gj = g[j];
        float pj = w[j] * t.decay;
        float mj = ea[j] * c.beta1 + c.oneMinusBeta1 * gj;
        float vj = es[j] * c.beta2 + (c.oneMinusBeta2 * gj) * gj;
        float denom = std::sqrt(vj) / t.bc2Sqrt + c.eps;
        ea[j] = mj;
        es[j] = vj;
        w[j] = pj + (t.stepSize * mj) / denom;
      }
      if (t.paramType != DType::F32) storeAt(t.paramType, t.param, ch.begin, w, m);
    }
  });
}

double sumOfSquares(const NormTensor* ts, size_t count) {
  std::vector<Chunk> chunks = chunksOf(ts, count);
  std::vector<double> partial(chunks.size());
  parallelFor(chunks.size(), 1, [&](size_t c0, size_t c1) {
    std::vector<float> x(kOptimChunk);
    for (size_t k = c0; k < c1; k++) {
      const Chunk& ch = chunks[k];
      size_t m = ch.end - ch.begin;
      loadAt(ts[ch.tensor].dtype, ts[ch.tensor].data, ch.begin, x.data(), m);
      // fp32 squares, eight interleaved double lanes combined in a fixed tree.
      double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      size_t j = 0;
      for (; j + 8 <= m; j += 8)
        for (int l = 0; l < 8; l++) lane[l] += double(x[j + l] * x[j + l]);
      for (; j < m; j++) lane[j & 7] += double(x[j] * x[j]);
      partial[k] = ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

void scaleInPlace(const NormTensor* ts, size_t count, float s) {
  std::vector<Chunk> chunks = chunksOf(ts, count);
  parallelFor(chunks.size(), 1, [&](size_t c0, size_t c1) {
    std::vector<float> x(kOptimChunk);
    for (size_t k = c0; k < c1; k++) {
      const Chunk& ch = chunks[k];
      const NormTensor& t = ts[ch.tensor];
      size_t m = ch.end - ch.begin;
      if (t.dtype == DType::F32) {
        float* d = static_cast<float*>(t.data) + ch.begin;
        for (size_t j = 0; j < m; j++) d[j] *= s;
      } else {
        loadAt(t.dtype, t.data, ch.begin, x.data(), m);
        for (size_t j = 0; j < m; j++) x[j] *= s;
        storeAt(t.dtype, t.data, ch.begin, x.data(), m);
      }
    }
  });
}

}  // namespace cpu
}  // namespace fa
