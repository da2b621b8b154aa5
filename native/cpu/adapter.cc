#include "adapter.h"

#include <vector>

#include "../philox.h"
#include "basic.h"
#include "parallel.h"
#include "rows.h"
#include "scratch.h"

namespace fa {
namespace cpu {

namespace {

// An fp32 view of host data: the pointer itself for float32, else a converted copy (in scratch slot
// `slot` when one is given: the large activations; in its own vector for the small weights).
class F32View {
 public:
  F32View(DType t, const void* p, size_t n, int slot = -1) {
    if (t == DType::F32 || !p) {
      ptr_ = static_cast<const float*>(p);
    } else {
      float* dst = slot >= 0 ? scratch(size_t(slot), n) : (copy_.resize(n), copy_.data());
      toFloat(t, p, dst, n);
      ptr_ = dst;
    }
  }
  const float* get() const { return ptr_; }

 private:
  const float* ptr_ = nullptr;
  std::vector<float> copy_;
};

void sgemm(bool tA, bool tB, int M, int N, int K, const float* A, const float* B, float* C) {
  gemm(DType::F32, tA, tB, M, N, K, 1.0f, A, tA ? M : K, 0, B, tB ? K : N, 0, 0.0f, C, N, 0, 1, "adapter");
}

size_t rowGrain(int d) { return std::max<size_t>(1, (1 << 15) / std::max(d, 1)); }

// The scaling of channel c: a tensor (scaleLen 1 or d) or the scalar.
struct Scale {
  std::vector<float> v;
  float s = 1.0f;
  Scale(const AdapterArgs& a) : s(a.scale) {
    if (a.scaleT) {
      v.resize(a.scaleLen);
      loadToFloat(a.dtype, a.scaleT, v.data(), a.scaleLen);
    }
  }
  float at(int c) const { return v.empty() ? s : v.size() == 1 ? v[0] : v[c]; }
};

// h_pre = x·downᵀ + b_down; h = act(h_pre); both [N, r]
void bottleneck(const AdapterArgs& a, const float* x, float* hPre, float* h) {
  F32View dw(a.dtype, a.downW, size_t(a.r) * a.d), db(a.dtype, a.downB, a.r);
  sgemm(false, true, a.N, a.r, a.d, x, dw.get(), hPre);
  parallelFor(a.N, rowGrain(a.r), [&](size_t n0, size_t n1) {
    for (size_t n = n0; n < n1; n++)
      for (int j = 0; j < a.r; j++) {
        float& v = hPre[n * a.r + j];
        v += db.get()[j];
        h[n * a.r + j] = actForward(a.act, v);
      }
  });
}

// z = h·upᵀ + b_up, written into z [N, d]
void upProject(const AdapterArgs& a, const std::vector<float>& h, std::vector<float>& z) {
  F32View uw(a.dtype, a.upW, size_t(a.d) * a.r), ub(a.dtype, a.upB, a.d);
  z.resize(size_t(a.N) * a.d);
  sgemm(false, true, a.N, a.d, a.r, h.data(), uw.get(), z.data());
  parallelFor(a.N, rowGrain(a.d), [&](size_t n0, size_t n1) {
    for (size_t n = n0; n < n1; n++)
      for (int c = 0; c < a.d; c++) z[n * a.d + c] += ub.get()[c];
  });
}

// The dropout factor of element i: 0 or 1/(1-p) (1 without dropout).
struct Dropout {
  bool on;
  uint32_t threshold;
  float keepScale;
  uint64_t seed;
  explicit Dropout(const AdapterArgs& a)
      : on(a.dropout > 0.0f), threshold(dropoutThreshold(a.dropout)), keepScale(1.0f / (1.0f - a.dropout)),
        seed(a.seed) {}
  float at(uint64_t i) const {
    if (!on) return 1.0f;
    return philoxWord(seed, kDropoutStream, i) >= threshold ? keepScale : 0.0f;
  }
};

}  // namespace

// out = r + m ⊙ s ⊙ (h·upᵀ + b_up), r the residual (x unless given), m the dropout mask, s the scale.
// The output is written once: with fp32, no dropout and a constant scale the up-projection GEMM adds
// straight into out (beta = 1) after one pass writes r + s·b_up there; otherwise the GEMM goes to a
// reused scratch buffer and one pass per row combines it, converting to the storage dtype.
void adapterForward(const AdapterArgs& a, void* out, float* hPreOut) {
  ScratchScope trim;
  const size_t nd = size_t(a.N) * a.d, nr = size_t(a.N) * a.r;
  F32View x(a.dtype, a.x, nd, 3);
  float* hPre = hPreOut ? hPreOut : scratch(0, nr);
  float* h = scratch(1, nr);
  bottleneck(a, x.get(), hPre, h);
  F32View res(a.dtype, a.residual, a.residual ? nd : 0, 4);
  const float* r = a.residual ? res.get() : x.get();
  F32View uw(a.dtype, a.upW, size_t(a.d) * a.r), ub(a.dtype, a.upB, a.d);
  const float* b = ub.get();
  Scale scale(a);
  std::vector<float> sc(a.d);
  for (int c = 0; c < a.d; c++) sc[c] = scale.at(c);
  Dropout drop(a);
  const size_t d = size_t(a.d);
  // A scaling tensor (a learned scale) takes the second path: its gradient Σ m·(h·upᵀ + b_up)·dOut is a
  // cancelling sum, and the reference's order of operations, (z + b_up)·s + r, keeps it within 1e-4.
  if (a.dtype == DType::F32 && !drop.on && !a.scaleT) {
    float* o = static_cast<float*>(out);
    const float s = sc[0];
    parallelFor(a.N, rowGrain(a.d), [&](size_t n0, size_t n1) {
      for (size_t n = n0; n < n1; n++) {
        const float* rn = r + n * d;
        float* on = o + n * d;
        for (size_t c = 0; c < d; c++) on[c] = rn[c] + s * b[c];
      }
    });
    gemm(DType::F32, false, true, a.N, a.d, a.r, s, h, a.r, 0, uw.get(), a.r, 0, 1.0f, o, a.d, 0, 1, "adapter");
    return;
  }
  float* z = scratch(2, nd);
  sgemm(false, true, a.N, a.d, a.r, h, uw.get(), z);
  parallelFor(a.N, rowGrain(a.d), [&](size_t n0, size_t n1) {
    std::vector<float> row(a.dtype == DType::F32 ? 0 : d);
    for (size_t n = n0; n < n1; n++) {
      const float* rn = r + n * d;
      float* zn = z + n * d;
      float* on = a.dtype == DType::F32 ? static_cast<float*>(out) + n * d : row.data();
      if (drop.on)
        for (size_t c = 0; c < d; c++) on[c] = rn[c] + drop.at(n * d + c) * sc[c] * (zn[c] + b[c]);
      else
        for (size_t c = 0; c < d; c++) on[c] = rn[c] + sc[c] * (zn[c] + b[c]);
      if (a.dtype != DType::F32) storeAt(a.dtype, out, n * d, on, d);
    }
  });
}

void adapterBackward(const AdapterArgs& a, const void* dOutRaw, const float* hPre, const AdapterGrads& g) {
  ScratchScope trim;
  size_t nd = size_t(a.N) * a.d, nr = size_t(a.N) * a.r;
  F32View x(a.dtype, a.x, nd, 5), dOut(a.dtype, dOutRaw, nd, 6);
  F32View dw(a.dtype, a.downW, size_t(a.r) * a.d), uw(a.dtype, a.upW, size_t(a.d) * a.r);
  Scale s(a);
  Dropout drop(a);

  float* h = scratch(0, nr);
  parallelFor(nr, 1 << 14, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) h[i] = actForward(a.act, hPre[i]);
  });

  // G is the gradient reaching z = h·upᵀ + b_up, times alpha. With a scalar scale and no
  // dropout it is dOut itself (alpha = s): no N×d buffer is made.
  bool simple = !a.scaleT && !drop.on;
  float* gm = nullptr;
  float* gs = nullptr;
  const float* G = dOut.get();
  float alpha = a.scale;
  if (!simple) {
    // gm = dOut ⊙ mask (the gradient reaching s⊙z); gs = gm ⊙ s (reaching z)
    gm = scratch(2, nd);
    gs = scratch(3, nd);
    std::vector<float> sc(a.d);
    for (int c = 0; c < a.d; c++) sc[c] = s.at(c);
    parallelFor(a.N, rowGrain(a.d), [&](size_t n0, size_t n1) {
      for (size_t n = n0; n < n1; n++) {
        const size_t i0 = n * a.d;
        const float* dn = dOut.get() + i0;
        if (drop.on)
          for (int c = 0; c < a.d; c++) gm[i0 + c] = dn[c] * drop.at(i0 + c);
        else
          for (int c = 0; c < a.d; c++) gm[i0 + c] = dn[c];
        for (int c = 0; c < a.d; c++) gs[i0 + c] = gm[i0 + c] * sc[c];
      }
    });
    G = gs;
    alpha = 1.0f;
  }

  if (g.dScale) {  // dScale = Σ gm ⊙ z, per channel or in total
    std::vector<float> z, hv(h, h + nr);
    upProject(a, hv, z);
    for (size_t i = 0; i < nd; i++) z[i] *= gm[i];
    std::vector<float> perChannel(a.d);
    colSum(DType::F32, z.data(), perChannel.data(), a.N, a.d);
    if (a.scaleLen == 1) {
      double t = 0;
      for (float v : perChannel) t += v;
      g.dScale[0] = float(t);
    } else {
      std::copy(perChannel.begin(), perChannel.end(), g.dScale);
    }
  }

  gemm(DType::F32, true, false, a.d, a.r, a.N, alpha, G, a.d, 0, h, a.r, 0, 0.0f, g.dUpW, a.r, 0, 1, "adapter");
  colSum(DType::F32, G, g.dUpB, a.N, a.d);
  if (alpha != 1.0f)
    for (int c = 0; c < a.d; c++) g.dUpB[c] *= alpha;

  float* dH = scratch(1, nr);  // [N, r] = alpha · G·up, then ⊙ act'(h_pre)
  gemm(DType::F32, false, false, a.N, a.r, a.d, alpha, G, a.d, 0, uw.get(), a.r, 0, 0.0f, dH, a.r, 0, 1, "adapter");
  parallelFor(nr, 1 << 14, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) dH[i] *= actGrad(a.act, hPre[i]);
  });

  sgemm(true, false, a.r, a.d, a.N, dH, x.get(), g.dDownW);  // [r, d] = dHpreᵀ·x
  colSum(DType::F32, dH, g.dDownB, a.N, a.r);

  // dx = dHpre·down (+ dOut): straight into dx when it is fp32
  float* dx = a.dtype == DType::F32 ? static_cast<float*>(g.dx) : scratch(4, nd);
  if (g.addDOutToDx) std::copy(dOut.get(), dOut.get() + nd, dx);
  gemm(DType::F32, false, false, a.N, a.d, a.r, 1.0f, dH, a.r, 0, dw.get(), a.d, 0, g.addDOutToDx ? 1.0f : 0.0f,
       dx, a.d, 0, 1, "adapter");
  if (a.dtype != DType::F32) fromFloat(a.dtype, dx, g.dx, nd);
}

void adapterForwardBatched(const BatchedArgs& b, void* out) {
  const AdapterArgs& base = b.base;
  size_t es = dtypeSize(base.dtype);
  size_t rowBytes = size_t(base.d) * es;
  const char* res = static_cast<const char*>(base.residual ? base.residual : base.x);
  // Rows of each adapter, in order; -1 rows get the residual (x unless given) unchanged.
  std::vector<std::vector<int>> rows(b.numAdapters);
  for (int n = 0; n < base.N; n++) {
    int k = b.rowAdapter[n];
    if (k < 0) std::memcpy(static_cast<char*>(out) + n * rowBytes, res + n * rowBytes, rowBytes);
    else rows[k].push_back(n);
  }
  for (int k = 0; k < b.numAdapters; k++) {
    if (rows[k].empty()) continue;
    int m = int(rows[k].size());
    auto gather = [&](const char* src) {
      std::vector<char> g(size_t(m) * rowBytes);
      for (int i = 0; i < m; i++) std::memcpy(g.data() + i * rowBytes, src + size_t(rows[k][i]) * rowBytes, rowBytes);
      return g;
    };
    std::vector<char> xs = gather(static_cast<const char*>(base.x)), os(size_t(m) * rowBytes);
    std::vector<char> rs = base.residual ? gather(res) : std::vector<char>();
    AdapterArgs a = base;
    a.N = m;
    a.x = xs.data();
    a.residual = base.residual ? rs.data() : nullptr;
    a.downW = static_cast<const char*>(base.downW) + size_t(k) * base.r * base.d * es;
    a.downB = static_cast<const char*>(base.downB) + size_t(k) * base.r * es;
    a.upW = static_cast<const char*>(base.upW) + size_t(k) * base.d * base.r * es;
    a.upB = static_cast<const char*>(base.upB) + size_t(k) * base.d * es;
    a.scaleT = nullptr;
    a.scale = b.scales[k];
    a.dropout = 0.0f;
    adapterForward(a, os.data(), nullptr);
    for (int i = 0; i < m; i++)
      std::memcpy(static_cast<char*>(out) + size_t(rows[k][i]) * rowBytes, os.data() + i * rowBytes, rowBytes);
  }
}

}  // namespace cpu
}  // namespace fa
