// Fused scaled-dot-product attention (causal and padding masks, grouped-query heads) without a
// [Tq, Tk] score matrix in memory: the contract the CUDA kernels in cuda/attention.cu implement.
// q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D] (query head h uses K/V head h / (Hq / Hkv)),
// keyMask [B, Tk] of maskType (nonzero = attend) or null; causal: query i sees keys j ≤ i + Tk − Tq.
#pragma once
#include <cstddef>

#include "../attention.h"
#include "../dtype.h"

namespace fa {
namespace cpu {

// out [B, Hq, Tq, D] = softmax(scale·q·kᵀ over the keys each query sees)·v; lse fp32 [B, Hq, Tq] =
// log Σ exp(scale·q·k) over those keys (−inf, and an output row of zeros, when a query sees none).
void attention(DType t, const void* q, const void* k, const void* v, const void* keyMask, DType maskType, void* out,
               float* lse, const AttentionShape& s);

// From dOut and the forward's out and lse: dq [B, Hq, Tq, D], and dk, dv [B, Hkv, Tk, D] summed over
// the query heads sharing each K/V head.
void attentionBackward(DType t, const void* q, const void* k, const void* v, const void* out, const void* dOut,
                       const float* lse, const void* keyMask, DType maskType, void* dq, void* dk, void* dv,
                       const AttentionShape& s);

}  // namespace cpu
}  // namespace fa
