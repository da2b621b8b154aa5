#include "attention.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "basic.h"
#include "parallel.h"
#include "rows.h"

namespace fa {
namespace cpu {

namespace {

std::vector<float> load(DType t, const void* p, size_t n) {
  std::vector<float> out(n);
  loadToFloat(t, p, out.data(), n);
  return out;
}

// Whether query i of batch b sees key j.
inline bool sees(const AttentionShape& s, const void* keyMask, DType mt, size_t b, size_t i, size_t j) {
  if (s.causal && j > i + (s.Tk - s.Tq)) return false;
  if (s.segments && s.segments[b * s.Tk + i] != s.segments[b * s.Tk + j]) return false;
  return !keyMask || maskOn(mt, keyMask, b * s.stride() + j);
}

}  // namespace

void attention(DType t, const void* q, const void* k, const void* v, const void* keyMask, DType maskType, void* out,
               float* lse, const AttentionShape& s) {
  const size_t G = s.Hq / s.Hkv, D = s.D;
  const size_t S = s.stride();
  std::vector<float> Q = load(t, q, s.B * s.Hq * s.Tq * D), K = load(t, k, s.B * s.Hkv * S * D),
                     V = load(t, v, s.B * s.Hkv * S * D);
  std::vector<float> O(s.B * s.Hq * s.Tq * D);
  parallelFor(s.B * s.Hq, 1, [&](size_t r0, size_t r1) {
    std::vector<float> p(s.Tk);
    for (size_t bh = r0; bh < r1; bh++) {
      size_t b = bh / s.Hq, h = bh % s.Hq, kv = b * s.Hkv + h / G;
      for (size_t i = 0; i < s.Tq; i++) {
        const float* qi = &Q[(bh * s.Tq + i) * D];
        float mx = -std::numeric_limits<float>::infinity();
        for (size_t j = 0; j < s.Tk; j++) {
          if (!sees(s, keyMask, maskType, b, i, j)) {
            p[j] = -std::numeric_limits<float>::infinity();
            continue;
          }
          const float* kj = &K[(kv * S + j) * D];
          float dot = 0;
          for (size_t d = 0; d < D; d++) dot += qi[d] * kj[d];
          p[j] = s.scale * dot;
          if (p[j] > mx) mx = p[j];
        }
        float* oi = &O[(bh * s.Tq + i) * D];
        if (mx == -std::numeric_limits<float>::infinity()) {  // sees nothing: zeros, as maskedSoftmax gives
          lse[bh * s.Tq + i] = mx;
          continue;
        }
        double sum = 0;
        for (size_t j = 0; j < s.Tk; j++) sum += (p[j] = std::exp(p[j] - mx));
        float inv = float(1.0 / sum);
        for (size_t j = 0; j < s.Tk; j++) {
          if (p[j] == 0) continue;
          const float* vj = &V[(kv * S + j) * D];
          float w = p[j] * inv;
          for (size_t d = 0; d < D; d++) oi[d] += w * vj[d];
        }
        lse[bh * s.Tq + i] = mx + float(std::log(sum));
      }
    }
  });
  storeFromFloat(t, O.data(), out, O.size());
}

void attentionBackward(DType t, const void* q, const void* k, const void* v, const void* out, const void* dOut,
                       const float* lse, const void* keyMask, DType maskType, void* dq, void* dk, void* dv,
                       const AttentionShape& s) {
  const size_t G = s.Hq / s.Hkv, D = s.D;
  std::vector<float> Q = load(t, q, s.B * s.Hq * s.Tq * D), K = load(t, k, s.B * s.Hkv * s.Tk * D),
                     V = load(t, v, s.B * s.Hkv * s.Tk * D), O = load(t, out, s.B * s.Hq * s.Tq * D),
                     dO = load(t, dOut, s.B * s.Hq * s.Tq * D);
  std::vector<float> dQ(Q.size()), dK(K.size()), dV(V.size());
  // one task per K/V head: it owns dK and dV of that head, and dQ of its G query heads
  parallelFor(s.B * s.Hkv, 1, [&](size_t r0, size_t r1) {
    std::vector<float> ds(s.Tk);
    for (size_t bk = r0; bk < r1; bk++) {
      size_t b = bk / s.Hkv, kvh = bk % s.Hkv;
      for (size_t g = 0; g < G; g++) {
        size_t bh = b * s.Hq + kvh * G + g;
        for (size_t i = 0; i < s.Tq; i++) {
          float l = lse[bh * s.Tq + i];
          if (l == -std::numeric_limits<float>::infinity()) continue;  // saw nothing: no gradient
          const float* qi = &Q[(bh * s.Tq + i) * D];
          const float* doi = &dO[(bh * s.Tq + i) * D];
          const float* oi = &O[(bh * s.Tq + i) * D];
          float Di = 0;
          for (size_t d = 0; d < D; d++) Di += doi[d] * oi[d];
          float* dqi = &dQ[(bh * s.Tq + i) * D];
          for (size_t j = 0; j < s.Tk; j++) {
            if (!sees(s, keyMask, maskType, b, i, j)) continue;
            const float* kj = &K[(bk * s.Tk + j) * D];
            const float* vj = &V[(bk * s.Tk + j) * D];
            float dot = 0, dp = 0;
            for (size_t d = 0; d < D; d++) {
              dot += qi[d] * kj[d];
              dp += doi[d] * vj[d];
            }
            float p = std::exp(s.scale * dot - l);
            float dsj = p * (dp - Di) * s.scale;
            float* dkj = &dK[(bk * s.Tk + j) * D];
            float* dvj = &dV[(bk * s.Tk + j) * D];
            for (size_t d = 0; d < D; d++) {
              dqi[d] += dsj * kj[d];
              dkj[d] += dsj * qi[d];
              dvj[d] += p * doi[d];
            }
          }
        }
      }
    }
  });
  storeFromFloat(t, dQ.data(), dq, dQ.size());
  storeFromFloat(t, dK.data(), dk, dK.size());
  storeFromFloat(t, dV.data(), dv, dV.size());
}

}  // namespace cpu
}  // namespace fa
