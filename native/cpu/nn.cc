#include "nn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../adapter.h"  // kDropoutStream
#include "../philox.h"
#include "parallel.h"
#include "rows.h"

namespace fa {
namespace cpu {

namespace {
constexpr size_t kGrain = kRowGrain;

// Row r of x (+ residual) as fp32.
inline void loadSum(DType t, const void* x, const void* residual, size_t r, size_t H, float* v, float* tmp) {
  loadAt(t, x, r * H, v, H);
  if (residual) {
    loadAt(t, residual, r * H, tmp, H);
    for (size_t c = 0; c < H; c++) v[c] += tmp[c];
  }
}
}  // namespace

void layerNorm(DType t, const void* x, const void* residual, const void* weight, const void* bias, void* out,
               float* mean, float* rstd, size_t rows, size_t H, float eps) {
  std::vector<float> w(H), b(H);
  loadAt(t, weight, 0, w.data(), H);
  loadAt(t, bias, 0, b.data(), H);
  parallelFor(rows, rowGrain(H), [&](size_t r0, size_t r1) {
    std::vector<float> v(H), tmp(H);
    for (size_t r = r0; r < r1; r++) {
      loadSum(t, x, residual, r, H, v.data(), tmp.data());
      double s = 0;
      for (size_t c = 0; c < H; c++) s += v[c];
      float mu = float(s / double(H));
      double q = 0;
      for (size_t c = 0; c < H; c++) q += double(v[c] - mu) * double(v[c] - mu);
      float rs = float(1.0 / std::sqrt(q / double(H) + double(eps)));
      for (size_t c = 0; c < H; c++) tmp[c] = (v[c] - mu) * rs * w[c] + b[c];
      storeAt(t, out, r * H, tmp.data(), H);
      mean[r] = mu;
      rstd[r] = rs;
    }
  });
}

void layerNormBackward(DType t, const void* dOut, const void* x, const void* residual, const void* weight,
                       const float* mean, const float* rstd, void* dx, float* dWeight, float* dBias, size_t rows,
                       size_t H) {
  std::vector<float> w(H);
  loadAt(t, weight, 0, w.data(), H);
  // dx, row by row: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dOut * w.
  parallelFor(rows, rowGrain(H), [&](size_t r0, size_t r1) {
    std::vector<float> v(H), tmp(H), g(H);
    for (size_t r = r0; r < r1; r++) {
      loadSum(t, x, residual, r, H, v.data(), tmp.data());
      loadAt(t, dOut, r * H, g.data(), H);
      double sg = 0, sgx = 0;
      for (size_t c = 0; c < H; c++) {
        g[c] *= w[c];
        v[c] = (v[c] - mean[r]) * rstd[r];  // xhat
        sg += g[c];
        sgx += double(g[c]) * v[c];
      }
      float a = float(sg / double(H)), bb = float(sgx / double(H));
      for (size_t c = 0; c < H; c++) tmp[c] = rstd[r] * (g[c] - a - v[c] * bb);
      storeAt(t, dx, r * H, tmp.data(), H);
    }
  });
  // dWeight = Σ_r dOut ⊙ xhat, dBias = Σ_r dOut: columns split across threads, rows in order.
  parallelFor(H, 64, [&](size_t c0, size_t c1) {
    size_t m = c1 - c0;
    std::vector<double> aw(m, 0.0), ab(m, 0.0);
    std::vector<float> xv(m), rv(m), dv(m);
    for (size_t r = 0; r < rows; r++) {
      loadAt(t, x, r * H + c0, xv.data(), m);
      if (residual) {
        loadAt(t, residual, r * H + c0, rv.data(), m);
        for (size_t c = 0; c < m; c++) xv[c] += rv[c];
      }
      loadAt(t, dOut, r * H + c0, dv.data(), m);
      for (size_t c = 0; c < m; c++) {
        float xhat = (xv[c] - mean[r]) * rstd[r];
        aw[c] += double(dv[c]) * xhat;
        ab[c] += dv[c];
      }
    }
    for (size_t c = 0; c < m; c++) {
      dWeight[c0 + c] = float(aw[c]);
      dBias[c0 + c] = float(ab[c]);
    }
  });
}

void maskedSoftmax(DType t, const void* scores, const void* keyMask, DType maskType, void* probs, size_t rows,
                   size_t Tk, size_t rowsPerBatch, float scale, size_t causalTq) {
  parallelFor(rows, rowGrain(Tk), [&](size_t r0, size_t r1) {
    std::vector<float> s(Tk);
    std::vector<char> on(Tk, 1);
    for (size_t r = r0; r < r1; r++) {
      loadAt(t, scores, r * Tk, s.data(), Tk);
      if (keyMask) {
        size_t b = r / rowsPerBatch;
        for (size_t k = 0; k < Tk; k++) on[k] = maskOn(maskType, keyMask, b * Tk + k);
      }
      if (causalTq) {
        size_t last = r % causalTq + (Tk - causalTq);  // the last key this query sees
        for (size_t k = last + 1; k < Tk; k++) on[k] = 0;
      }
      float mx = -std::numeric_limits<float>::infinity();
      bool nan = false;
      for (size_t k = 0; k < Tk; k++) {
        s[k] *= scale;
        if (!on[k]) continue;
        if (s[k] > mx) mx = s[k];
        nan |= std::isnan(s[k]);
      }
      if (nan) {  // as PyTorch: NaN in, NaN out (not "nothing to attend to" when every score is NaN)
        for (size_t k = 0; k < Tk; k++) s[k] = on[k] ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
      } else if (mx == -std::numeric_limits<float>::infinity()) {  // nothing to attend to
        std::fill(s.begin(), s.end(), 0.0f);
      } else {
        double sum = 0;
        for (size_t k = 0; k < Tk; k++) {
          s[k] = on[k] ? std::exp(s[k] - mx) : 0.0f;
          sum += s[k];
        }
        float inv = float(1.0 / sum);
        for (size_t k = 0; k < Tk; k++) s[k] = on[k] ? s[k] * inv : 0.0f;  // masked keys stay 0, as on CUDA
      }
      storeAt(t, probs, r * Tk, s.data(), Tk);
    }
  });
}

void maskedSoftmaxBackward(DType t, const void* probs, const void* dProbs, void* dScores, size_t rows, size_t Tk,
                           float scale) {
  parallelFor(rows, rowGrain(Tk), [&](size_t r0, size_t r1) {
    std::vector<float> p(Tk), d(Tk);
    for (size_t r = r0; r < r1; r++) {
      loadAt(t, probs, r * Tk, p.data(), Tk);
      loadAt(t, dProbs, r * Tk, d.data(), Tk);
      double dot = 0;
      for (size_t k = 0; k < Tk; k++) dot += double(p[k]) * d[k];
      float fd = float(dot);
      for (size_t k = 0; k < Tk; k++) d[k] = scale * p[k] * (d[k] - fd);
      storeAt(t, dScores, r * Tk, d.data(), Tk);
    }
  });
}

void transpose12(size_t elemSize, const void* x, void* out, size_t A, size_t B, size_t C, size_t D) {
  size_t rowBytes = D * elemSize;
  size_t n = A * B * C;  // output rows (a, c, b)
  const char* src = static_cast<const char*>(x);
  char* dst = static_cast<char*>(out);
  parallelFor(n, rowGrain(D), [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
      size_t b = i % B, c = (i / B) % C, a = i / (B * C);
      std::memcpy(dst + i * rowBytes, src + ((a * B + b) * C + c) * rowBytes, rowBytes);
    }
  });
}

int64_t firstBadIndex(const int32_t* ids, size_t n, int64_t limit, const int32_t* allowed, int32_t* bad) {
  for (size_t i = 0; i < n; i++) {
    int32_t v = ids[i];
    if (allowed && v == *allowed) continue;
    if (v < 0 || int64_t(v) >= limit) {
      *bad = v;
      return int64_t(i);
    }
  }
  return -1;
}

void embedding(DType t, const void* table, const int32_t* ids, void* out, size_t N, size_t H) {
  size_t rowBytes = H * dtypeSize(t);
  const char* src = static_cast<const char*>(table);
  char* dst = static_cast<char*>(out);
  parallelFor(N, rowGrain(H), [&](size_t n0, size_t n1) {
    for (size_t n = n0; n < n1; n++) std::memcpy(dst + n * rowBytes, src + size_t(ids[n]) * rowBytes, rowBytes);
  });
}

void embeddingBackward(DType t, const void* dOut, const int32_t* ids, float* dTable, size_t N, size_t H, size_t V) {
  // Columns split across threads; each walks the positions in order and adds in fp32,
  // the same order of additions as the CUDA kernel.
  parallelFor(H, 64, [&](size_t c0, size_t c1) {
    size_t m = c1 - c0;
    for (size_t v = 0; v < V; v++) std::fill(dTable + v * H + c0, dTable + v * H + c1, 0.0f);
    std::vector<float> d(m);
    for (size_t n = 0; n < N; n++) {
      loadAt(t, dOut, n * H + c0, d.data(), m);
      float* row = dTable + size_t(ids[n]) * H + c0;
      for (size_t c = 0; c < m; c++) row[c] += d[c];
    }
  });
}

void dropout(DType t, const void* x, void* out, size_t n, float p, uint64_t seed) {
  uint32_t threshold = dropoutThreshold(p);
  float keep = 1.0f / (1.0f - p);
  parallelFor(n, kGrain, [&](size_t i0, size_t i1) {
    constexpr size_t kTile = 1024;
    float buf[kTile];
    for (size_t i = i0; i < i1; i += kTile) {
      size_t m = std::min(kTile, i1 - i);
      loadAt(t, x, i, buf, m);
      if (p > 0.0f) {
        U32x4 r{};
        for (size_t j = 0; j < m; j++) {
          uint64_t idx = i + j;
          if (j == 0 || (idx & 3) == 0) r = philox4x32(seed, idx >> 2, kDropoutStream);
          uint32_t w;
          switch (idx & 3) { case 0: w = r.x; break; case 1: w = r.y; break; case 2: w = r.z; break; default: w = r.w; }
          buf[j] = w >= threshold ? buf[j] * keep : 0.0f;
        }
      }
      storeAt(t, out, i, buf, m);
    }
  });
}

void softmaxCrossEntropy(DType t, const void* logits, const int32_t* labels, float* loss, void* dLogits, size_t rows,
                         size_t C, int32_t ignoreIndex) {
  size_t count = 0;
  for (size_t r = 0; r < rows; r++) count += labels[r] != ignoreIndex;
  std::vector<float> rowLoss(rows, 0.0f);
  float invCount = count ? 1.0f / float(count) : 0.0f;
  parallelFor(rows, rowGrain(C), [&](size_t r0, size_t r1) {
    std::vector<float> z(C);
    for (size_t r = r0; r < r1; r++) {
      int32_t label = labels[r];
      if (label == ignoreIndex) {
        std::fill(z.begin(), z.end(), 0.0f);
      } else {
        loadAt(t, logits, r * C, z.data(), C);
        float mx = -std::numeric_limits<float>::infinity();
        for (size_t c = 0; c < C; c++) mx = std::max(mx, z[c]);
        double sum = 0;
        for (size_t c = 0; c < C; c++) sum += std::exp(double(z[c]) - mx);
        rowLoss[r] = float(std::log(sum) + mx - z[size_t(label)]);
        float inv = float(1.0 / sum);
        for (size_t c = 0; c < C; c++) z[c] = std::exp(z[c] - mx) * inv * invCount;
        z[size_t(label)] -= invCount;
      }
      storeAt(t, dLogits, r * C, z.data(), C);
    }
  });
  double total = 0;
  for (size_t r = 0; r < rows; r++) total += rowLoss[r];
  *loss = count ? float(total / double(count)) : 0.0f;
}

}  // namespace cpu
}  // namespace fa
