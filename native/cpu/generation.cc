#include "generation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "parallel.h"
#include "rows.h"

namespace fa {
namespace cpu {

void cacheScatter(void* pool, size_t slotCount, const void* src, const int32_t* slots, size_t N, size_t rowBytes) {
  char* dst = static_cast<char*>(pool);
  const char* s = static_cast<const char*>(src);
  for (size_t i = 0; i < N; i++)
    if (slots[i] >= 0 && size_t(slots[i]) < slotCount) std::memcpy(dst + size_t(slots[i]) * rowBytes, s + i * rowBytes, rowBytes);
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(m − M) for combining partial softmaxes, 0 for an empty part.
inline float weightOf(float m, float M) { return m == kNegInf ? 0.0f : std::exp(m - M); }

// One part of one sequence's keys for one query head: the running max m, the sum l of exp(score − m)
// and the unnormalised output acc[D] = Σ exp(score − m)·v.
struct Partial {
  float m = kNegInf, l = 0;
};

}  // namespace

void decodeAttention(DType t, const void* q, const void* kPool, const void* vPool, const int32_t* pageTable,
                     const int32_t* seqLens, void* out, const DecodeShape& s) {
  const size_t G = s.Hq / s.Hkv, D = s.D, P = std::max<size_t>(s.splits, 1), es = dtypeSize(t);
  std::vector<Partial> parts(s.B * s.Hq * P);
  std::vector<float> acc(s.B * s.Hq * P * D, 0.0f);
  // one task per (sequence, K/V head, part): the G query heads sharing a K/V head read each key once
  parallelFor(s.B * s.Hkv * P, 1, [&](size_t r0, size_t r1) {
    std::vector<float> qs(G * D), kRow(D), vRow(D), sc;
    for (size_t task = r0; task < r1; task++) {
      const size_t b = task / (s.Hkv * P), kvh = task / P % s.Hkv, part = task % P;
      const size_t len = size_t(seqLens[b]), chunk = (len + P - 1) / P;
      const size_t j0 = std::min(len, part * chunk), j1 = std::min(len, j0 + chunk);
      if (j0 >= j1) continue;
      loadAt(t, q, (b * s.Hq + kvh * G) * D, qs.data(), G * D);
      sc.assign(G * (j1 - j0), 0.0f);
      auto rowOf = [&](const void* pool, size_t j, float* buf) -> const float* {
        size_t slot = size_t(pageTable[b * s.maxPages + j / s.pageSize]) * s.pageSize + j % s.pageSize;
        size_t at = (slot * s.Hkv + kvh) * D;
        if (t == DType::F32) return static_cast<const float*>(pool) + at;
        loadToFloat(t, static_cast<const char*>(pool) + at * es, buf, D);
        return buf;
      };
      for (size_t j = j0; j < j1; j++) {
        const float* k = rowOf(kPool, j, kRow.data());
        for (size_t g = 0; g < G; g++) {
          const float* qg = &qs[g * D];
          float dot = 0;
#pragma omp simd reduction(+ : dot)
          for (size_t d = 0; d < D; d++) dot += qg[d] * k[d];
          sc[g * (j1 - j0) + (j - j0)] = s.scale * dot;
        }
      }
      for (size_t g = 0; g < G; g++) {
        Partial& pr = parts[(b * s.Hq + kvh * G + g) * P + part];
        float* sg = &sc[g * (j1 - j0)];
        for (size_t j = 0; j < j1 - j0; j++) pr.m = std::max(pr.m, sg[j]);
        for (size_t j = 0; j < j1 - j0; j++) pr.l += (sg[j] = std::exp(sg[j] - pr.m));
      }
      for (size_t j = j0; j < j1; j++) {
        const float* v = rowOf(vPool, j, vRow.data());
        for (size_t g = 0; g < G; g++) {
          float p = sc[g * (j1 - j0) + (j - j0)];
          float* a = &acc[((b * s.Hq + kvh * G + g) * P + part) * D];
          for (size_t d = 0; d < D; d++) a[d] += p * v[d];
        }
      }
    }
  });
  // combine the parts of each (sequence, query head)
  std::vector<float> O(s.B * s.Hq * D, 0.0f);
  for (size_t bh = 0; bh < s.B * s.Hq; bh++) {
    float M = kNegInf, L = 0;
    for (size_t p = 0; p < P; p++) M = std::max(M, parts[bh * P + p].m);
    if (M == kNegInf) continue;  // no keys: zeros
    for (size_t p = 0; p < P; p++) L += parts[bh * P + p].l * weightOf(parts[bh * P + p].m, M);
    for (size_t p = 0; p < P; p++) {
      float w = weightOf(parts[bh * P + p].m, M) / L;
      const float* a = &acc[(bh * P + p) * D];
      for (size_t d = 0; d < D; d++) O[bh * D + d] += w * a[d];
    }
  }
  storeFromFloat(t, O.data(), out, O.size());
}

namespace {

// The largest key τ with Σ_{key_i ≥ τ} weight_i ≥ target (weights ≥ 0), by selection on the keys'
// bytes, most significant first: four passes with 256-bin histograms of the candidates that share
// the prefix chosen so far. Requires Σ weight ≥ target.
uint32_t largestThreshold(const std::vector<uint32_t>& keys, const std::vector<double>& weight, double target) {
  uint32_t prefix = 0;
  double above = 0;  // weight of the keys above the current prefix's range
  for (int shift = 24; shift >= 0; shift -= 8) {
    const uint32_t highMask = shift == 24 ? 0u : ~0u << (shift + 8);
    double hist[256] = {0};
    for (size_t i = 0; i < keys.size(); i++)
      if ((keys[i] & highMask) == prefix) hist[(keys[i] >> shift) & 255u] += weight[i];
    int bin = 255;
    for (; bin > 0; bin--) {
      if (above + hist[bin] >= target) break;
      above += hist[bin];
    }
    prefix |= uint32_t(bin) << shift;
  }
  return prefix;
}

int32_t sampleRow(const std::vector<float>& x, const float* prm) {
  const size_t V = x.size();
  const float temperature = prm[0], topP = prm[2], u = prm[4];
  const double topK = prm[1];
  size_t best = V;
  for (size_t i = 0; i < V; i++)
    if (std::isfinite(x[i]) && (best == V || x[i] > x[best])) best = i;
  if (best == V) return -1;  // no finite logit
  if (!(temperature > 0)) return int32_t(best);
  std::vector<float> z(V);
  for (size_t i = 0; i < V; i++) z[i] = std::isnan(x[i]) ? kNegInf : x[i] / temperature;
  const float mx = z[best];
  std::vector<uint32_t> keys(V);
  for (size_t i = 0; i < V; i++) keys[i] = orderedKey(z[i]);
  uint32_t kMin = 0;
  if (topK >= 1 && topK < double(V)) kMin = largestThreshold(keys, std::vector<double>(V, 1.0), topK);
  std::vector<double> w(V, 0.0);
  double total = 0;
  for (size_t i = 0; i < V; i++)
    if (keys[i] >= kMin) total += (w[i] = std::exp(double(z[i] - mx)));
  uint32_t wMin = 0;
  if (topP < 1) {
    std::vector<uint32_t> wKeys(V);
    for (size_t i = 0; i < V; i++) wKeys[i] = orderedKey(float(w[i]));
    wMin = largestThreshold(wKeys, w, double(topP) * total);
    total = 0;
    for (size_t i = 0; i < V; i++) {
      if (wKeys[i] < wMin) w[i] = 0;
      total += w[i];
    }
  }
  const double r = double(u) * total;
  double run = 0;
  size_t last = best;
  for (size_t i = 0; i < V; i++) {
    if (w[i] <= 0) continue;
    last = i;
    run += w[i];
    if (run > r) return int32_t(i);
  }
  return int32_t(last);
}

}  // namespace

void sampleTokens(DType t, const void* logits, const float* params, const int32_t* penaltyIds, size_t P,
                  int32_t* tokens, size_t B, size_t V) {
  parallelFor(B, 1, [&](size_t r0, size_t r1) {
    std::vector<float> x(V);
    for (size_t b = r0; b < r1; b++) {
      loadAt(t, logits, b * V, x.data(), V);
      const float* prm = params + b * kSampleParams;
      const float pen = prm[3];
      if (penaltyIds && pen != 1.0f)
        for (size_t j = 0; j < P; j++) {
          int32_t id = penaltyIds[b * P + j];
          if (id < 0 || size_t(id) >= V) continue;
          x[id] = x[id] > 0 ? x[id] / pen : x[id] * pen;
        }
      tokens[b] = sampleRow(x, prm);
    }
  });
}

}  // namespace cpu
}  // namespace fa
