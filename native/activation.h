// Adapter non-linearities and their derivatives, shared by the CPU and CUDA kernels.
#pragma once
#include <cmath>
#include <string>

#include "philox.h"  // FA_HD

namespace fa {

enum class Act : int { Relu = 0, Gelu = 1, GeluTanh = 2, Silu = 3, Identity = 4, Tanh = 5 };

FA_HD float actForward(Act a, float x) {
  switch (a) {
    case Act::Relu: return x > 0.0f ? x : 0.0f;
    case Act::Gelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case Act::GeluTanh: {
      float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(u));
    }
    case Act::Silu: return x / (1.0f + expf(-x));
    case Act::Tanh: return tanhf(x);
    default: return x;
  }
}

// d act(x) / dx
FA_HD float actGrad(Act a, float x) {
  switch (a) {
    case Act::Relu: return x > 0.0f ? 1.0f : 0.0f;
    case Act::Gelu: {
      float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
      float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
      return cdf + x * pdf;
    }
    case Act::GeluTanh: {
      float x2 = x * x;
      float u = 0.79788456080286536f * (x + 0.044715f * x2 * x);
      float t = tanhf(u);
      float du = 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * x2);
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    case Act::Silu: {
      float s = 1.0f / (1.0f + expf(-x));
      return s * (1.0f + x * (1.0f - s));
    }
    case Act::Tanh: {
      float t = tanhf(x);
      return 1.0f - t * t;
    }
    default: return 1.0f;
  }
}

inline bool parseAct(const char* s, Act* out) {
  struct { const char* name; Act a; } names[] = {{"relu", Act::Relu}, {"gelu", Act::Gelu}, {"gelu_tanh", Act::GeluTanh},
                                                 {"silu", Act::Silu}, {"swish", Act::Silu}, {"identity", Act::Identity},
                                                 {"linear", Act::Identity},
                                                 {"tanh", Act::Tanh}};
  for (auto& n : names)
    if (std::string(s) == n.name) { *out = n.a; return true; }
  return false;
}

}  // namespace fa
