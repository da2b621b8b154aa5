// Decoder building blocks on host memory: RMSNorm and rotary position embeddings (RoPE),
// forward and backward. Plain functions on pointers and shapes; the CUDA versions in
// cuda/decoder.h have the same meaning and are tested against these. Storage of any float
// dtype, fp32 math.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../dtype.h"

namespace fa {
namespace cpu {

// out = weight ⊙ (x · rstd), rstd = 1 / sqrt(mean(x²) + eps), per row of length H
// (LLaMA's RMSNorm: x·rstd is rounded to the storage dtype before the weight multiplies it,
// as transformers does). rstd fp32 [rows] is kept for the backward.
void rmsNorm(DType t, const void* x, const void* weight, void* out, float* rstd, size_t rows, size_t H, float eps);

// dx = rstd · (g − x̂ · mean(g ⊙ x̂)), g = dOut ⊙ weight, x̂ = x · rstd; dWeight fp32 [H] = Σ_rows dOut ⊙ x̂,
// reduced over rows in a fixed order.
void rmsNormBackward(DType t, const void* dOut, const void* x, const void* weight, const float* rstd, void* dx,
                     float* dWeight, size_t rows, size_t H);

// Rotary embedding in the rotate-half layout of transformers' LLaMA: for each of `tokens`
// rows (position pos[token]) and each of `heads` vectors of dim D (the first `rot` dims rotate,
// rot even, the rest pass through), with angle_i = float(pos) · invFreq[i] (fp32), i < rot/2:
//   out[i]         = x[i]·cos − x[i + rot/2]·sin
//   out[i + rot/2] = x[i + rot/2]·cos + x[i]·sin
// cos and sin are rounded to the storage dtype first, as transformers does. inverse = true
// rotates by −angle: the backward (dx from dOut).
void rope(DType t, const void* x, const int32_t* pos, const float* invFreq, void* out, size_t tokens, size_t heads,
          size_t D, size_t rot, bool inverse);

// A KV cache write: for each of `outer` blocks, rows [offset, offset + n) of dst (block of `rows` rows
// of `rowBytes`) take the n rows of src (a block of n rows). dst [B, H, Tmax, D] ← src [B, H, n, D].
void cacheWrite(void* dst, const void* src, size_t outer, size_t rows, size_t n, size_t rowBytes, size_t offset);

// The gated MLP's middle (SwiGLU with act = silu): out = act(gate) ⊙ up, elementwise over n values;
// backward: dGate = dOut ⊙ up ⊙ act'(gate), dUp = dOut ⊙ act(gate). act is an Act (activation.h).
void gatedActivation(DType t, const void* gate, const void* up, void* out, size_t n, int act);
void gatedActivationBackward(DType t, const void* dOut, const void* gate, const void* up, void* dGate, void* dUp,
                             size_t n, int act);

}  // namespace cpu
}  // namespace fa
