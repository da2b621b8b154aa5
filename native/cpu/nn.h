// Transformer building blocks on host memory: LayerNorm (with a fused residual),
// masked attention softmax, head transposes, embeddings, dropout, cross-entropy.
// Plain functions on pointers and shapes; the CUDA versions in cuda/nn.h have the
// same meaning and are tested against these. Storage of any float dtype, fp32 math.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../dtype.h"

namespace fa {
namespace cpu {

// out = (v - mean) * rstd * weight + bias with v = x + residual (residual may be nullptr),
// per row of length H. x, residual, weight, bias, out share dtype t; mean, rstd fp32 [rows].
void layerNorm(DType t, const void* x, const void* residual, const void* weight, const void* bias, void* out,
               float* mean, float* rstd, size_t rows, size_t H, float eps);

// From dOut and the forward's mean/rstd: dx (dtype t, the gradient w.r.t. x and equally
// w.r.t. residual), dWeight and dBias fp32 [H] reduced over rows in a fixed order.
void layerNormBackward(DType t, const void* dOut, const void* x, const void* residual, const void* weight,
                       const float* mean, const float* rstd, void* dx, float* dWeight, float* dBias, size_t rows,
                       size_t H);

// probs[r, :] = softmax(scale * scores[r, :]) over Tk keys. With keyMask ([B, Tk] of maskType,
// nonzero = attend), row r belongs to batch r / rowsPerBatch; masked keys get exactly 0 and a
// row with no key left (or whose every attended score is -inf) is all zeros. causalTq > 0 makes
// it causal: row r is query q = r % causalTq, which attends to keys k <= q + (Tk - causalTq).
void maskedSoftmax(DType t, const void* scores, const void* keyMask, DType maskType, void* probs, size_t rows,
                   size_t Tk, size_t rowsPerBatch, float scale, size_t causalTq = 0);

// dScores = scale * probs ⊙ (dProbs - Σ_k probs·dProbs), per row of Tk.
void maskedSoftmaxBackward(DType t, const void* probs, const void* dProbs, void* dScores, size_t rows, size_t Tk,
                           float scale);

// [A, B, C, D] -> [A, C, B, D] for elements of elemSize bytes.
void transpose12(size_t elemSize, const void* x, void* out, size_t A, size_t B, size_t C, size_t D);

// Index checks: the first position p (in order) with ids[p] outside [0, limit) (and, when
// allowed is given, ids[p] != *allowed), or -1. The offending value goes to *bad.
int64_t firstBadIndex(const int32_t* ids, size_t n, int64_t limit, const int32_t* allowed, int32_t* bad);

// out[n, :] = table[ids[n], :] for n < N; ids must be in range (see firstBadIndex).
void embedding(DType t, const void* table, const int32_t* ids, void* out, size_t N, size_t H);

// dTable[v, :] = Σ_{n: ids[n] = v} dOut[n, :] in fp32, summed in increasing n (zeros for unused v).
void embeddingBackward(DType t, const void* dOut, const int32_t* ids, float* dTable, size_t N, size_t H, size_t V);

// out[i] = x[i] / (1 - p) when philoxWord(seed, kDropoutStream, i) >= dropoutThreshold(p), else 0.
// The backward is the same function applied to dOut.
void dropout(DType t, const void* x, void* out, size_t n, float p, uint64_t seed);

// Mean cross-entropy over rows with labels[r] != ignoreIndex (labels in range, see firstBadIndex)
// and its gradient dLogits = (softmax - onehot) / count (0 on ignored rows). *loss = 0 and
// dLogits = 0 when no row counts.
void softmaxCrossEntropy(DType t, const void* logits, const int32_t* labels, float* loss, void* dLogits, size_t rows,
                         size_t C, int32_t ignoreIndex);

}  // namespace cpu
}  // namespace fa
