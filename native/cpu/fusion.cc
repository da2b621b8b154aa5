#include "fusion.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../philox.h"
#include "parallel.h"
#include "rows.h"

namespace fa {
namespace cpu {

namespace {

// Whether score (n, i) survives dropout, and the scale of a kept one.
inline bool kept(const FusionShape& s, size_t n, size_t i) {
  return philoxWord(s.seed, kFusionDropoutStream, n * s.A + i) >= dropoutThreshold(s.dropout);
}

// Per-thread rows of one token: q [H], k and v [A, H] as fp32.
struct TokenRows {
  std::vector<float> q, k, v;
  explicit TokenRows(const FusionShape& s) : q(s.H), k(s.A * s.H), v(s.A * s.H) {}
  void load(DType t, const void* qp, const void* kp, const void* vp, size_t n, const FusionShape& s) {
    loadAt(t, qp, n * s.H, q.data(), s.H);
    loadAt(t, kp, n * s.A * s.H, k.data(), s.A * s.H);
    loadAt(t, vp, n * s.A * s.H, v.data(), s.A * s.H);
  }
};

inline float dot(const float* a, const float* b, size_t H) {
  float acc = 0.0f;
  for (size_t c = 0; c < H; c++) acc += a[c] * b[c];
  return acc;
}

}  // namespace

void fusionAttention(DType t, const void* q, const void* k, const void* v, void* out, float* probs, const FusionShape& s) {
  const float keepScale = s.dropout > 0.0f ? 1.0f / (1.0f - s.dropout) : 1.0f;
  parallelFor(s.N, rowGrain(2 * s.A * s.H), [&](size_t n0, size_t n1) {
    TokenRows r(s);
    std::vector<float> o(s.H);
    for (size_t n = n0; n < n1; n++) {
      r.load(t, q, k, v, n, s);
      float* p = probs + n * s.A;
      float top = -INFINITY;
      for (size_t i = 0; i < s.A; i++) {
        float sc = dot(r.q.data(), &r.k[i * s.H], s.H);
        if (s.dropout > 0.0f) sc = kept(s, n, i) ? sc * keepScale : 0.0f;
        p[i] = sc / s.temperature;
        top = std::max(top, p[i]);
      }
      float sum = 0.0f;
      for (size_t i = 0; i < s.A; i++) sum += (p[i] = std::exp(p[i] - top));
      for (size_t i = 0; i < s.A; i++) p[i] /= sum;
      std::fill(o.begin(), o.end(), 0.0f);
      for (size_t i = 0; i < s.A; i++)
        for (size_t c = 0; c < s.H; c++) o[c] += p[i] * r.v[i * s.H + c];
      storeAt(t, out, n * s.H, o.data(), s.H);
    }
  });
}

void fusionAttentionBackward(DType t, const void* dOut, const void* q, const void* k, const void* v, const float* probs,
                             void* dq, void* dk, void* dv, const FusionShape& s) {
  const float keepScale = s.dropout > 0.0f ? 1.0f / (1.0f - s.dropout) : 1.0f;
  parallelFor(s.N, rowGrain(4 * s.A * s.H), [&](size_t n0, size_t n1) {
    TokenRows r(s);
    std::vector<float> d(s.H), g(s.A), dqRow(s.H), rows(s.A * s.H);
    for (size_t n = n0; n < n1; n++) {
      r.load(t, q, k, v, n, s);
      loadAt(t, dOut, n * s.H, d.data(), s.H);
      const float* p = probs + n * s.A;
      float pg = 0.0f;
      for (size_t i = 0; i < s.A; i++) {
        g[i] = dot(d.data(), &r.v[i * s.H], s.H);
        pg += p[i] * g[i];
      }
      // dv
      for (size_t i = 0; i < s.A; i++)
        for (size_t c = 0; c < s.H; c++) rows[i * s.H + c] = p[i] * d[c];
      storeAt(t, dv, n * s.A * s.H, rows.data(), s.A * s.H);
      // the scores' gradient, then dq and dk
      std::fill(dqRow.begin(), dqRow.end(), 0.0f);
      for (size_t i = 0; i < s.A; i++) {
        float ds = p[i] * (g[i] - pg) / s.temperature;
        if (s.dropout > 0.0f) ds = kept(s, n, i) ? ds * keepScale : 0.0f;
        for (size_t c = 0; c < s.H; c++) {
          dqRow[c] += ds * r.k[i * s.H + c];
          rows[i * s.H + c] = ds * r.q[c];
        }
      }
      storeAt(t, dq, n * s.H, dqRow.data(), s.H);
      storeAt(t, dk, n * s.A * s.H, rows.data(), s.A * s.H);
    }
  });
}

}  // namespace cpu
}  // namespace fa
