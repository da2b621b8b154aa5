// The contracts of the generation kernels, shared by the CPU references (native/cpu/generation.h)
// and the CUDA versions (cuda/generation.h).
//
// Paged KV cache. Each layer's keys (and, alike, values) live in one preallocated pool of `slots`
// rows, [slots, Hkv, D]; slots are grouped in pages of `pageSize` consecutive rows. Sequence b's
// token j is at slot pageTable[b, j / pageSize] · pageSize + j % pageSize, so sequences of different
// lengths take only the pages they need, and a sequence can join or leave a running batch without
// moving the others' keys.
//
// Sampling. One row of logits per sequence and five fp32 parameters per row:
//   temperature (≤ 0: greedy, the first index of the largest finite logit), topK (0: off), topP
//   (≥ 1: off), repetitionPenalty (1: off; transformers' definition, applied to the row's listed
//   token ids), u (a uniform draw in [0, 1) made by the caller, so the host's seeded generator
//   decides the text on every device).
//   Sampling keeps the tokens with z = logit / temperature at or above the k-th largest z, then,
//   with w = exp(z − max z), those with w at or above θ, the largest value for which the kept mass
//   Σ_{w ≥ θ} w reaches topP of the total — the smallest set of most likely tokens holding topP of
//   the probability, ties kept, found by selection on the values' bits, not by sorting the vocabulary.
//   The token is then the first kept index i (in vocabulary order) where the running sum of kept w
//   exceeds u · Σ kept w. NaN logits count as −∞; a row with no finite logit gives −1.
#pragma once
#include <cstddef>
#include <cstdint>

#include "philox.h"  // FA_HD

namespace fa {

struct DecodeShape {
  size_t B, Hq, Hkv, D;
  size_t pageSize, maxPages;  // the page table is int32 [B, maxPages]
  size_t slots;               // rows in each pool (a whole number of pages)
  float scale;
  size_t splits;  // parts each sequence's keys are split into (partial softmaxes combined after)
  FA_HD size_t pages() const { return slots / pageSize; }
};

constexpr size_t kSampleParams = 5;  // temperature, topK, topP, repetitionPenalty, u

// The order-preserving map of a float's bits onto uint32 (larger float, larger key); NaN maps
// below −∞ so that it is never chosen.
FA_HD uint32_t orderedKey(float f) {
  if (f != f) return 0u;
  uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(f);
#else
  __builtin_memcpy(&u, &f, 4);
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

}  // namespace fa
