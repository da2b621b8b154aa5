// Generation kernels on host memory: the paged KV-cache write, decode attention over the paged
// cache (one query token per sequence, grouped-query heads, split along the sequence) and the
// sampler. Contracts in native/generation.h; the CUDA versions in cuda/generation.h mean the same.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../dtype.h"
#include "../generation.h"

namespace fa {
namespace cpu {

// pool [slotCount, W] row slots[i] = src [N, W] row i; rows with a slot outside the pool (−1 for
// padding) are skipped.
void cacheScatter(void* pool, size_t slotCount, const void* src, const int32_t* slots, size_t N, size_t rowBytes);

// out [B, Hq, D] = softmax(scale · q·kᵀ)·v over the seqLens[b] cached tokens of sequence b
// (zeros when it has none); q [B, Hq, D]; kPool and vPool [slots, Hkv, D]; query head h reads
// K/V head h / (Hq / Hkv).
void decodeAttention(DType t, const void* q, const void* kPool, const void* vPool, const int32_t* pageTable,
                     const int32_t* seqLens, void* out, const DecodeShape& s);

// tokens int32 [B] from logits [B, V] (any float dtype) and params fp32 [B, kSampleParams];
// penaltyIds int32 [B, P] (−1 = none; each id at most once per row) or null.
void sampleTokens(DType t, const void* logits, const float* params, const int32_t* penaltyIds, size_t P,
                  int32_t* tokens, size_t B, size_t V);

}  // namespace cpu
}  // namespace fa
