#include "decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../activation.h"
#include "basic.h"
#include "parallel.h"
#include "rows.h"

namespace fa {
namespace cpu {

namespace {
constexpr size_t kGrain = kRowGrain;
// v rounded to the storage dtype (identity for fp32).
inline float roundTo(DType t, float v) {
  float out = v;
  uint32_t buf = 0;
  storeFromFloat(t, &v, &buf, 1);
  loadToFloat(t, &buf, &out, 1);
  return out;
}
}  // namespace

void rmsNorm(DType t, const void* x, const void* weight, void* out, float* rstd, size_t rows, size_t H, float eps) {
  std::vector<float> w(H);
  loadAt(t, weight, 0, w.data(), H);
  parallelFor(rows, rowGrain(H), [&](size_t r0, size_t r1) {
    std::vector<float> v(H);
    for (size_t r = r0; r < r1; r++) {
      loadAt(t, x, r * H, v.data(), H);
      float ss = 0.0f;  // fp32, as transformers accumulates
      for (size_t c = 0; c < H; c++) ss += v[c] * v[c];
      float rs = 1.0f / std::sqrt(ss / float(H) + eps);
      for (size_t c = 0; c < H; c++) v[c] = w[c] * roundTo(t, v[c] * rs);
      storeAt(t, out, r * H, v.data(), H);
      rstd[r] = rs;
    }
  });
}

void rmsNormBackward(DType t, const void* dOut, const void* x, const void* weight, const float* rstd, void* dx,
                     float* dWeight, size_t rows, size_t H) {
  std::vector<float> w(H);
  loadAt(t, weight, 0, w.data(), H);
  parallelFor(rows, rowGrain(H), [&](size_t r0, size_t r1) {
    std::vector<float> d(H), v(H);
    for (size_t r = r0; r < r1; r++) {
      loadAt(t, dOut, r * H, d.data(), H);
      loadAt(t, x, r * H, v.data(), H);
      float rs = rstd[r];
      double sgx = 0;
      for (size_t c = 0; c < H; c++) sgx += double(d[c] * w[c]) * double(v[c] * rs);
      float m = float(sgx / double(H));
      for (size_t c = 0; c < H; c++) v[c] = rs * (d[c] * w[c] - v[c] * rs * m);
      storeAt(t, dx, r * H, v.data(), H);
    }
  });
  // dWeight: columns in parallel, rows summed in order (deterministic).
  parallelFor(H, std::max<size_t>(1, kGrain / std::max<size_t>(rows, 1)), [&](size_t c0, size_t c1) {
    std::vector<double> acc(c1 - c0, 0.0);
    std::vector<float> d(c1 - c0), v(c1 - c0);
    for (size_t r = 0; r < rows; r++) {
      loadAt(t, dOut, r * H + c0, d.data(), c1 - c0);
      loadAt(t, x, r * H + c0, v.data(), c1 - c0);
      for (size_t c = 0; c < c1 - c0; c++) acc[c] += double(d[c]) * double(roundTo(t, v[c] * rstd[r]));
    }
    for (size_t c = 0; c < c1 - c0; c++) dWeight[c0 + c] = float(acc[c]);
  });
}

void rope(DType t, const void* x, const int32_t* pos, const float* invFreq, void* out, size_t tokens, size_t heads,
          size_t D, size_t rot, bool inverse) {
  size_t half = rot / 2;
  parallelFor(tokens, rowGrain(heads * D), [&](size_t t0, size_t t1) {
    std::vector<float> c(half), s(half), v(heads * D);
    for (size_t tok = t0; tok < t1; tok++) {
      float p = float(pos[tok]);
      for (size_t i = 0; i < half; i++) {
        float a = p * invFreq[i];  // fp32 product, as transformers computes it
        c[i] = roundTo(t, std::cos(a));
        s[i] = roundTo(t, inverse ? -std::sin(a) : std::sin(a));
      }
      loadAt(t, x, tok * heads * D, v.data(), heads * D);
      for (size_t h = 0; h < heads; h++) {
        float* e = v.data() + h * D;
        for (size_t i = 0; i < half; i++) {
          float a = e[i], b = e[i + half];
          e[i] = a * c[i] - b * s[i];
          e[i + half] = b * c[i] + a * s[i];
        }
      }
      storeAt(t, out, tok * heads * D, v.data(), heads * D);
    }
  });
}

void cacheWrite(void* dst, const void* src, size_t outer, size_t rows, size_t n, size_t rowBytes, size_t offset) {
  for (size_t o = 0; o < outer; o++)
    std::memcpy(static_cast<char*>(dst) + (o * rows + offset) * rowBytes, static_cast<const char*>(src) + o * n * rowBytes,
                n * rowBytes);
}

void gatedActivation(DType t, const void* gate, const void* up, void* out, size_t n, int act) {
  parallelFor(n, kGrain, [&](size_t i0, size_t i1) {
    std::vector<float> g(i1 - i0), u(i1 - i0);
    loadAt(t, gate, i0, g.data(), i1 - i0);
    loadAt(t, up, i0, u.data(), i1 - i0);
    for (size_t i = 0; i < g.size(); i++) g[i] = actForward(Act(act), g[i]) * u[i];
    storeAt(t, out, i0, g.data(), i1 - i0);
  });
}

void gatedActivationBackward(DType t, const void* dOut, const void* gate, const void* up, void* dGate, void* dUp,
                             size_t n, int act) {
  parallelFor(n, kGrain, [&](size_t i0, size_t i1) {
    size_t m = i1 - i0;
    std::vector<float> d(m), g(m), u(m), dg(m), du(m);
    loadAt(t, dOut, i0, d.data(), m);
    loadAt(t, gate, i0, g.data(), m);
    loadAt(t, up, i0, u.data(), m);
    for (size_t i = 0; i < m; i++) {
      dg[i] = d[i] * u[i] * actGrad(Act(act), g[i]);
      du[i] = d[i] * actForward(Act(act), g[i]);
    }
    storeAt(t, dGate, i0, dg.data(), m);
    storeAt(t, dUp, i0, du.data(), m);
  });
}

}  // namespace cpu
}  // namespace fa
