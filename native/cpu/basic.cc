#include "basic.h"

#include <cmath>
#include <vector>

#include "../philox.h"
#include "parallel.h"

namespace fa {
namespace cpu {

namespace {
constexpr size_t kGrain = 1 << 14;
constexpr size_t kTile = 1024;  // elements converted per step in mixed-dtype loops

// Runs f(i0, i1, aF, bF, outF) over fp32 tiles; converts from/to t around it.
template <typename F>
void tiled(DType t, size_t n, F&& f) {
  parallelFor(n, kGrain, [&](size_t begin, size_t end) {
    float buf[3][kTile];
    for (size_t i = begin; i < end; i += kTile) {
      size_t m = std::min(kTile, end - i);
      f(i, m, buf[0], buf[1], buf[2]);
    }
  });
}

inline void loadAt(DType t, const void* p, size_t i, float* dst, size_t m) {
  loadToFloat(t, static_cast<const char*>(p) + i * dtypeSize(t), dst, m);
}
inline void storeAt(DType t, void* p, size_t i, const float* src, size_t m) {
  storeFromFloat(t, src, static_cast<char*>(p) + i * dtypeSize(t), m);
}
}  // namespace

void toFloat(DType t, const void* src, float* dst, size_t n) {
  parallelFor(n, kGrain, [&](size_t b, size_t e) { loadAt(t, src, b, dst + b, e - b); });
}
void fromFloat(DType t, const float* src, void* dst, size_t n) {
  parallelFor(n, kGrain, [&](size_t b, size_t e) { storeAt(t, dst, b, src + b, e - b); });
}

// out[r·nb + c] = f(a[r·nb + c], b[c]) over rows of b's length (nb divides n: b is a suffix
// broadcast, or as long as a). fp32 runs in place; other dtypes convert a row at a time.
template <typename F>
void rowwise(DType t, const void* a, const void* b, void* out, size_t n, size_t nb, F f) {
  if (nb == 0 || n == 0) return;
  size_t rows = n / nb;
  if (rows == 1) {  // b as long as a: split the elements, not the (single) row
    parallelFor(n, kGrain, [&](size_t i0, size_t i1) {
      float fa[1024], fb[1024];
      for (size_t i = i0; i < i1; i += 1024) {
        size_t m = std::min<size_t>(1024, i1 - i);
        loadAt(t, a, i, fa, m);
        loadAt(t, b, i, fb, m);
        for (size_t j = 0; j < m; j++) fa[j] = f(fa[j], fb[j]);
        storeAt(t, out, i, fa, m);
      }
    });
    return;
  }
  if (t == DType::F32) {
    const float* pa = static_cast<const float*>(a);
    const float* pb = static_cast<const float*>(b);
    float* po = static_cast<float*>(out);
    parallelFor(rows, std::max<size_t>(1, kGrain / nb), [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; r++)
        for (size_t c = 0; c < nb; c++) po[r * nb + c] = f(pa[r * nb + c], pb[c]);
    });
    return;
  }
  std::vector<float> fb(nb);
  loadToFloat(t, b, fb.data(), nb);
  parallelFor(rows, std::max<size_t>(1, kGrain / nb), [&](size_t r0, size_t r1) {
    std::vector<float> row(nb);
    for (size_t r = r0; r < r1; r++) {
      loadAt(t, a, r * nb, row.data(), nb);
      for (size_t c = 0; c < nb; c++) row[c] = f(row[c], fb[c]);
      storeAt(t, out, r * nb, row.data(), nb);
    }
  });
}

void add(DType t, const void* a, const void* b, void* out, size_t n, size_t nb, float alpha) {
  rowwise(t, a, b, out, n, nb, [alpha](float x, float y) { return x + alpha * y; });
}

void mul(DType t, const void* a, const void* b, void* out, size_t n, size_t nb) {
  rowwise(t, a, b, out, n, nb, [](float x, float y) { return x * y; });
}

void scale(DType t, const void* a, void* out, size_t n, float s) {
  tiled(t, n, [&](size_t i, size_t m, float* fa, float*, float* fo) {
    loadAt(t, a, i, fa, m);
    for (size_t j = 0; j < m; j++) fo[j] = s * fa[j];
    storeAt(t, out, i, fo, m);
  });
}

void cast(DType from, const void* src, DType to, void* dst, size_t n) {
  tiled(from, n, [&](size_t i, size_t m, float* f, float*, float*) {
    if (from == DType::I32 && to == DType::I32) {
      std::memcpy(static_cast<int32_t*>(dst) + i, static_cast<const int32_t*>(src) + i, m * 4);
      return;
    }
    loadAt(from, src, i, f, m);
    storeAt(to, dst, i, f, m);
  });
}

void fill(DType t, void* out, size_t n, float v) {
  tiled(t, n, [&](size_t i, size_t m, float* f, float*, float*) {
    for (size_t j = 0; j < m; j++) f[j] = v;
    storeAt(t, out, i, f, m);
  });
}

void randomFill(DType t, void* out, size_t n, uint64_t seed, bool normal, float a, float b) {
  tiled(t, n, [&](size_t i, size_t m, float* f, float*, float*) {
    for (size_t j = 0; j < m; j++) {
      uint64_t idx = i + j;
      if (normal) {
        // Box-Muller on the word pair (2p, 2p+1) of pair p = idx/2.
        uint64_t p = idx >> 1;
        float u1 = uintToUnit(philoxWord(seed, 0, 2 * p));
        float u2 = uintToUnit(philoxWord(seed, 0, 2 * p + 1));
        float r = std::sqrt(-2.0f * std::log(u1));
        float th = 6.283185307179586f * u2;
        f[j] = a + b * ((idx & 1) ? r * std::sin(th) : r * std::cos(th));
      } else {
        f[j] = a + (b - a) * uintToUnit(philoxWord(seed, 0, idx));
      }
    }
    storeAt(t, out, i, f, m);
  });
}

void activation(DType t, const void* x, void* out, size_t n, Act act) {
  tiled(t, n, [&](size_t i, size_t m, float* f, float*, float*) {
    loadAt(t, x, i, f, m);
    for (size_t j = 0; j < m; j++) f[j] = actForward(act, f[j]);
    storeAt(t, out, i, f, m);
  });
}

void activationGrad(DType t, const void* x, const void* dy, void* out, size_t n, Act act) {
  tiled(t, n, [&](size_t i, size_t m, float* fx, float* fy, float*) {
    loadAt(t, x, i, fx, m);
    loadAt(t, dy, i, fy, m);
    for (size_t j = 0; j < m; j++) fx[j] = fy[j] * actGrad(act, fx[j]);
    storeAt(t, out, i, fx, m);
  });
}

void rowSum(DType t, const void* x, void* out, size_t rows, size_t cols) {
  std::vector<float> res(rows);
  parallelFor(rows, std::max<size_t>(1, kGrain / std::max<size_t>(cols, 1)), [&](size_t r0, size_t r1) {
    std::vector<float> row(cols);
    for (size_t r = r0; r < r1; r++) {
      loadAt(t, x, r * cols, row.data(), cols);
      double s = 0;
      for (size_t c = 0; c < cols; c++) s += row[c];
      res[r] = float(s);
    }
  });
  storeFromFloat(t, res.data(), out, rows);
}

void colSum(DType t, const void* x, void* out, size_t rows, size_t cols) {
  std::vector<float> res(cols, 0.0f);
  // Split columns across threads; each thread walks all rows for its columns.
  parallelFor(cols, 64, [&](size_t c0, size_t c1) {
    size_t w = c1 - c0;
    std::vector<double> acc(w, 0.0);
    std::vector<float> row(w);
    for (size_t r = 0; r < rows; r++) {
      loadAt(t, x, r * cols + c0, row.data(), w);
      for (size_t c = 0; c < w; c++) acc[c] += row[c];
    }
    for (size_t c = 0; c < w; c++) res[c0 + c] = float(acc[c]);
  });
  storeFromFloat(t, res.data(), out, cols);
}

}  // namespace cpu
}  // namespace fa
