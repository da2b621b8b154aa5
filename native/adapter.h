// The bottleneck adapter op contract, shared by the CPU kernel (cpu/adapter.cc)
// and the CUDA kernels (cuda/adapter.cu). Plain C++: no N-API, no CUDA types.
//
//   h_pre = x · downᵀ + b_down                 [N, r]  (fp32, kept for backward)
//   h     = act(h_pre)
//   z     = h · upᵀ + b_up                     [N, d]
//   out   = residual + dropout(s ⊙ z)          residual = x unless given
//
// s is a scalar or a per-channel vector. Dropout keeps element i = n·d + c when
// philoxWord(seed, kDropoutStream, i) >= dropoutThreshold(p) and scales kept ones
// by 1/(1-p): both backends draw the same mask, and backward regenerates it.
#pragma once
#include <cstdint>

#include "activation.h"
#include "dtype.h"

namespace fa {

constexpr uint64_t kDropoutStream = 1;  // Philox offset: random fills use 0

struct AdapterArgs {
  DType dtype = DType::F32;  // x, residual, out, weights, dOut, dx share it
  int N = 0, d = 0, r = 0;
  const void* x = nullptr;
  const void* residual = nullptr;  // nullptr: the residual is x
  const void* downW = nullptr;     // [r, d]
  const void* downB = nullptr;     // [r]
  const void* upW = nullptr;       // [d, r]
  const void* upB = nullptr;       // [d]
  const void* scaleT = nullptr;    // nullptr: the scalar `scale`; else [scaleLen] of dtype
  int scaleLen = 0;                // 1 or d
  float scale = 1.0f;
  Act act = Act::Relu;
  float dropout = 0.0f;            // applied when > 0 (the binding passes 0 outside training)
  uint64_t seed = 0;
};

struct AdapterGrads {
  void* dx = nullptr;       // [N, d] of dtype
  float* dDownW = nullptr;  // [r, d] fp32
  float* dDownB = nullptr;  // [r]
  float* dUpW = nullptr;    // [d, r]
  float* dUpB = nullptr;    // [d]
  float* dScale = nullptr;  // [scaleLen] when scaleT is given, else nullptr
  bool addDOutToDx = true;  // the residual was x: dx includes dOut
};

// Many adapters in one batch: weights stacked [A, ...]; row n uses adapter rowAdapter[n]
// (-1: out = x). Scale per adapter (scales[A]).
struct BatchedArgs {
  AdapterArgs base;               // x, weights (stacked), act; N, d, r; scaleT unused
  int numAdapters = 0;
  const int32_t* rowAdapter = nullptr;  // host memory [N]
  const float* scales = nullptr;        // host memory [A]
};

}  // namespace fa
