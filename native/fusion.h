// AdapterFusion's attention over the adapters' outputs at one site (AdapterHub's BertFusion), the
// contract the CPU (cpu/fusion.cc) and CUDA (cuda/fusion.cu) kernels share. Per token n, over the
// A adapters i:
//   s_i  = q_n · k_{n,i}
//   s'_i = training ? (kept_i ? s_i / (1 − p) : 0) : s_i      (dropout on the scores, as BertFusion does;
//          kept_i: philoxWord(seed, kFusionDropoutStream, n·A + i) >= dropoutThreshold(p))
//   p_i  = softmax_i(s'_i / T)                                  (T: the temperature, ≥ 1)
//   out_n = Σ_i p_i · v_{n,i}
// q, out [N, H]; k, v [N, A, H], one float dtype; probs fp32 [N, A], kept for the backward:
//   dv_{n,i} = p_i · dOut_n,   g_i = dOut_n · v_{n,i},   ds'_i = p_i (g_i − Σ_j p_j g_j) / T,
//   ds_i = training ? (kept_i ? ds'_i / (1 − p) : 0) : ds'_i,
//   dq_n = Σ_i ds_i · k_{n,i},   dk_{n,i} = ds_i · q_n.
// Sums run in fp32 in index order (i, then the H columns).
#pragma once
#include <cstdint>

namespace fa {

constexpr uint64_t kFusionDropoutStream = 3;  // Philox offset: fills 0, adapter dropout 1

struct FusionShape {
  size_t N = 0, A = 0, H = 0;
  float temperature = 1.0f;
  float dropout = 0.0f;  // applied when > 0 (the binding passes 0 outside training)
  uint64_t seed = 0;
};

}  // namespace fa
