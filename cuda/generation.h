// CUDA versions of native/cpu/generation.h (contracts in native/generation.h): the paged KV-cache
// write, decode attention over the paged cache split along the sequence (flash-decoding: partial
// softmaxes per part, combined by a second kernel), and the sampler (one block per row; top-k and
// top-p thresholds by bitwise selection with deterministic block reductions, no sort). Same
// arguments plus the device, queued on its stream. Page ids and lengths live on the device and are
// not read back: the kernels skip pages outside the pool and clamp lengths to the page table.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../native/dtype.h"
#include "../native/generation.h"

namespace fa {
namespace cuda {

constexpr size_t kDecodeMaxD = 256;

void cacheScatter(int dev, void* pool, size_t slotCount, const void* src, const int32_t* slots, size_t N, size_t rowBytes);
void decodeAttention(int dev, DType t, const void* q, const void* kPool, const void* vPool, const int32_t* pageTable,
                     const int32_t* seqLens, void* out, const DecodeShape& s);
void sampleTokens(int dev, DType t, const void* logits, const float* params, const int32_t* penaltyIds, size_t P,
                  int32_t* tokens, size_t B, size_t V);

// Parts to split each sequence into so that B·Hq·parts blocks fill the device (the CPU uses its own rule).
size_t decodeSplits(int dev, size_t B, size_t Hq, size_t maxLength);

}  // namespace cuda
}  // namespace fa
