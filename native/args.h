// Shared argument checks of the op bindings: one op's tensors checked against each other,
// with errors that name the op and the argument ("layerNorm: argument 'weight' has shape ...").
#pragma once
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "tensor.h"

// Calls cpu::NAME(args...) or cuda::NAME(device, args...).
#ifdef FA_WITH_CUDA
#define FA_NN_DISPATCH(device, NAME, ...)               \
  do {                                                  \
    if ((device) == ::fa::kCpu) cpu::NAME(__VA_ARGS__); \
    else cuda::NAME((device), __VA_ARGS__);             \
  } while (0)
#else
#define FA_NN_DISPATCH(device, NAME, ...) cpu::NAME(__VA_ARGS__)
#endif

namespace fa {

inline std::string shapeStr(const std::vector<int64_t>& shape) {
  TensorImpl t;
  t.shape = shape;
  return t.shapeString();
}

inline std::string arg(const char* name) { return std::string("argument '") + name + "'"; }

inline bool absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

inline std::string num(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", d);
  return buf;
}

// Checks of one op's arguments against a reference tensor (its name `refName`).
struct Args {
  Napi::Env env;
  const char* op;

  [[noreturn]] void error(const std::string& msg) const { fail(env, op, msg); }

  TensorImpl& tensor(Napi::Value v, const char* name) const { return argTensor(env, v, op, name); }

  void floating(const TensorImpl& t, const char* name) const {
    if (!isFloat(t.dtype)) error(arg(name) + " must be a floating-point tensor, got int32");
  }
  void int32(const TensorImpl& t, const char* name) const {
    if (t.dtype != DType::I32) error(arg(name) + " must be an int32 tensor, got " + dtypeName(t.dtype));
  }
  void dtype(const TensorImpl& t, const char* name, DType want, const char* refName) const {
    if (t.dtype != want)
      error(arg(name) + " is " + dtypeName(t.dtype) + " but '" + refName + "' is " + dtypeName(want));
  }
  void device(const TensorImpl& t, const char* name, const TensorImpl& ref, const char* refName) const {
    if (t.device != ref.device)
      error(arg(name) + " is on " + t.deviceString() + " but '" + refName + "' is on " + ref.deviceString());
  }
  void shape(const TensorImpl& t, const char* name, const std::vector<int64_t>& want) const {
    if (t.shape != want) error(arg(name) + " has shape " + t.shapeString() + ", expected " + shapeStr(want));
  }
  // Same shape, dtype and device as ref.
  void like(const TensorImpl& t, const char* name, const TensorImpl& ref, const char* refName) const {
    shape(t, name, ref.shape);
    dtype(t, name, ref.dtype, refName);
    device(t, name, ref, refName);
  }
  void minRank(const TensorImpl& t, const char* name, size_t rank, const char* what) const {
    if (t.shape.size() < rank) error(arg(name) + " must be " + what + ", got shape " + t.shapeString());
  }

  double number(Napi::Value v, const char* name) const {
    if (!v.IsNumber()) error(arg(name) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) error(arg(name) + " must be finite, got " + num(d));
    return d;
  }
  double integer(Napi::Value v, const char* name, double lo, double hi) const {
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= lo && d <= hi) || d != std::floor(d))
      error(arg(name) + " must be an integer in [" + std::to_string(int64_t(lo)) + ", " + std::to_string(int64_t(hi)) +
            "]");
    return d;
  }
  float probability(Napi::Value v, const char* name) const {
    double p = number(v, name);
    if (p < 0 || p >= 1) error(arg(name) + " must be in [0, 1), got " + num(p));
    return float(p);
  }
  uint64_t seed(Napi::Value v) const {
    if (!v.IsNumber()) error("argument 'seed' must be a non-negative integer");
    return uint64_t(integer(v, "seed", 0, 9007199254740991.0));
  }
};

inline std::vector<int64_t> leading(const TensorImpl& t) { return std::vector<int64_t>(t.shape.begin(), t.shape.end() - 1); }

inline size_t product(const std::vector<int64_t>& s) {
  size_t n = 1;
  for (int64_t d : s) n *= size_t(d);
  return n;
}

}  // namespace fa
