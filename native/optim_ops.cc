// Bindings for the optimizer ops: adamwStep (torch.optim.AdamW over many tensors in one
// call), sumOfSquares and scaleInPlace (clipping by the global gradient norm). Tensors may
// sit on several devices; each op makes one kernel call (one launch) per device.
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cpu/optim.h"
#include "ops.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/optim.h"
#endif

namespace fa {

namespace {

std::string arg(const std::string& name) { return "argument '" + name + "'"; }
std::string at(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }
bool absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

std::string num(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", d);
  return buf;
}

Napi::Array argArray(Napi::Env env, Napi::Value v, const char* op, const char* name) {
  if (!v.IsArray()) fail(env, op, arg(name) + " must be an array of tensors");
  return v.As<Napi::Array>();
}

double argFinite(Napi::Env env, Napi::Value v, const char* op, const std::string& name) {
  if (!v.IsNumber()) fail(env, op, arg(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) fail(env, op, arg(name) + " must be finite, got " + num(d));
  return d;
}

// A per-tensor value: one number for every tensor, or an array of `count` numbers.
std::vector<double> perTensor(Napi::Env env, Napi::Value v, const char* op, const char* name, size_t count) {
  if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    if (a.Length() != count)
      fail(env, op, arg(name) + " has " + std::to_string(a.Length()) + " values for " + std::to_string(count) +
                        " tensors");
    std::vector<double> out(count);
    for (size_t i = 0; i < count; i++) out[i] = argFinite(env, a.Get(uint32_t(i)), op, at(name, i));
    return out;
  }
  return std::vector<double>(count, argFinite(env, v, op, name));
}

void check(Napi::Env env, const char* op, bool ok, const std::string& msg) {
  if (!ok) fail(env, op, msg);
}

// Rejects two writable tensors sharing storage (an element would be updated twice).
struct Distinct {
  Napi::Env env;
  const char* op;
  std::map<const void*, std::string> seen;
  void add(const TensorImpl& t, const std::string& name) {
    if (!t.numel()) return;
    auto r = seen.emplace(t.ptr(), name);
    if (!r.second) fail(env, op, arg(name) + " shares storage with '" + r.first->second + "'");
  }
};

// adamwStep(params, grads, expAvg, expAvgSq, master|null, hp): in place, see native/cpu/optim.h.
// hp = { lr, beta1, beta2, eps, weightDecay: number | number[], step: number | number[] }
Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "adamwStep";
  Napi::Array params = argArray(env, info[0], op, "params");
  Napi::Array grads = argArray(env, info[1], op, "grads");
  Napi::Array expAvg = argArray(env, info[2], op, "expAvg");
  Napi::Array expAvgSq = argArray(env, info[3], op, "expAvgSq");
  bool noMaster = absent(info[4]);
  Napi::Array master = noMaster ? Napi::Array::New(env) : argArray(env, info[4], op, "master");
  size_t count = params.Length();
  auto sameLength = [&](const Napi::Array& a, const char* name) {
    if (a.Length() != count)
      fail(env, op, arg(name) + " has " + std::to_string(a.Length()) + " entries but 'params' has " +
                        std::to_string(count));
  };
  sameLength(grads, "grads");
  sameLength(expAvg, "expAvg");
  sameLength(expAvgSq, "expAvgSq");
  if (!noMaster) sameLength(master, "master");
  if (!info[5].IsObject()) fail(env, op, "argument 'hp' must be an object { lr, beta1, beta2, eps, weightDecay, step }");
  Napi::Object hp = info[5].As<Napi::Object>();
  double lr = argFinite(env, hp.Get("lr"), op, "lr");
  double beta1 = argFinite(env, hp.Get("beta1"), op, "beta1");
  double beta2 = argFinite(env, hp.Get("beta2"), op, "beta2");
  double eps = argFinite(env, hp.Get("eps"), op, "eps");
  check(env, op, lr >= 0, "argument 'lr' must be >= 0, got " + num(lr));
  check(env, op, beta1 >= 0 && beta1 < 1, "argument 'beta1' must be in [0, 1), got " + num(beta1));
  check(env, op, beta2 >= 0 && beta2 < 1, "argument 'beta2' must be in [0, 1), got " + num(beta2));
  check(env, op, eps >= 0, "argument 'eps' must be >= 0, got " + num(eps));
  std::vector<double> wd = perTensor(env, hp.Get("weightDecay"), op, "weightDecay", count);
  std::vector<double> step = perTensor(env, hp.Get("step"), op, "step", count);
  for (size_t i = 0; i < count; i++) {
    std::string wn = hp.Get("weightDecay").IsArray() ? at("weightDecay", i) : "weightDecay";
    std::string sn = hp.Get("step").IsArray() ? at("step", i) : "step";
    check(env, op, wd[i] >= 0, arg(wn) + " must be >= 0, got " + num(wd[i]));
    check(env, op, step[i] >= 1 && step[i] <= 9007199254740991.0 && step[i] == std::floor(step[i]),
          arg(sn) + " must be an integer >= 1 (the 1-based step count), got " + num(step[i]));
  }

  AdamWConsts c;
  c.beta1 = float(beta1);
  c.oneMinusBeta1 = float(1.0 - beta1);
  c.beta2 = float(beta2);
  c.oneMinusBeta2 = float(1.0 - beta2);
  c.eps = float(eps);

  std::map<int, std::vector<AdamWTensor>> byDevice;
  Distinct distinct{env, op, {}};
  for (size_t i = 0; i < count; i++) {
    std::string pn = at("params", i), gn = at("grads", i), mn = at("expAvg", i), vn = at("expAvgSq", i),
                wn = at("master", i);
    TensorImpl& p = argTensor(env, params.Get(uint32_t(i)), op, pn.c_str());
    TensorImpl& g = argTensor(env, grads.Get(uint32_t(i)), op, gn.c_str());
    TensorImpl& m = argTensor(env, expAvg.Get(uint32_t(i)), op, mn.c_str());
    TensorImpl& v = argTensor(env, expAvgSq.Get(uint32_t(i)), op, vn.c_str());
    check(env, op, isFloat(p.dtype), arg(pn) + " must be a floating-point tensor, got int32");
    check(env, op, isFloat(g.dtype), arg(gn) + " must be a floating-point tensor, got int32");
    auto like = [&](const TensorImpl& t, const std::string& name) {
      check(env, op, t.shape == p.shape,
            arg(name) + " has shape " + t.shapeString() + " but '" + pn + "' has " + p.shapeString());
      check(env, op, t.device == p.device,
            arg(name) + " is on " + t.deviceString() + " but '" + pn + "' is on " + p.deviceString());
    };
    auto fp32 = [&](const TensorImpl& t, const std::string& name) {
      check(env, op, t.dtype == DType::F32, arg(name) + " must be float32, got " + dtypeName(t.dtype));
    };
    like(g, gn);
    like(m, mn);
    fp32(m, mn);
    like(v, vn);
    fp32(v, vn);
    Napi::Value mv = noMaster ? env.Null() : master.Get(uint32_t(i));
    float* masterPtr = nullptr;
    if (p.dtype == DType::F32) {
      check(env, op, absent(mv), arg(wn) + " must be null for a float32 param (the param is its own master)");
    } else {
      check(env, op, !absent(mv),
            arg(wn) + " is required: '" + pn + "' is " + dtypeName(p.dtype) + " and needs an fp32 master copy");
      TensorImpl& w = argTensor(env, mv, op, wn.c_str());
      like(w, wn);
      fp32(w, wn);
      distinct.add(w, wn);
      masterPtr = static_cast<float*>(w.ptr());
    }
    distinct.add(p, pn);
    distinct.add(m, mn);
    distinct.add(v, vn);
    check(env, op, g.numel() == 0 || (g.ptr() != m.ptr() && g.ptr() != v.ptr() && (!masterPtr || g.ptr() != masterPtr)),
          arg(gn) + " shares storage with the optimizer state of '" + pn + "'");

    // Bias corrections and step size in double, rounded once to fp32 (torch's Python floats).
    double bc1 = 1.0 - std::pow(beta1, step[i]);
    double bc2 = 1.0 - std::pow(beta2, step[i]);
    AdamWTensor t;
    t.param = p.ptr();
    t.paramType = p.dtype;
    t.grad = g.ptr();
    t.gradType = g.dtype;
    t.expAvg = static_cast<float*>(m.ptr());
    t.expAvgSq = static_cast<float*>(v.ptr());
    t.master = masterPtr;
    t.n = p.numel();
    t.decay = float(1.0 - lr * wd[i]);
    t.stepSize = float(-(lr / bc1));
    t.bc2Sqrt = float(std::sqrt(bc2));
    if (t.n) byDevice[p.device].push_back(t);
  }

  runKernel(env, op, [&] {
    for (auto& kv : byDevice) {
      if (kv.first == kCpu) cpu::adamwStep(kv.second.data(), kv.second.size(), c);
#ifdef FA_WITH_CUDA
      else cuda::adamwStep(kv.first, kv.second.data(), kv.second.size(), c);
#endif
    }
  });
  return env.Undefined();
}

// The tensors of sumOfSquares / scaleInPlace grouped by device.
std::map<int, std::vector<NormTensor>> normTensors(Napi::Env env, Napi::Value v, const char* op, bool writable) {
  Napi::Array a = argArray(env, v, op, "tensors");
  std::map<int, std::vector<NormTensor>> byDevice;
  Distinct distinct{env, op, {}};
  for (size_t i = 0; i < a.Length(); i++) {
    std::string name = at("tensors", i);
    TensorImpl& t = argTensor(env, a.Get(uint32_t(i)), op, name.c_str());
    check(env, op, isFloat(t.dtype), arg(name) + " must be a floating-point tensor, got int32");
    if (writable) distinct.add(t, name);
    if (t.numel()) byDevice[t.device].push_back(NormTensor{t.ptr(), t.numel(), t.dtype});
  }
  return byDevice;
}

// sumOfSquares(tensors) -> Σ x² over every element (squares in fp32, deterministic order).
Napi::Value SumOfSquares(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "sumOfSquares";
  auto byDevice = normTensors(env, info[0], op, false);
  double total = 0.0;
  runKernel(env, op, [&] {
    for (auto& kv : byDevice) {
      if (kv.first == kCpu) total += cpu::sumOfSquares(kv.second.data(), kv.second.size());
#ifdef FA_WITH_CUDA
      else total += cuda::sumOfSquares(kv.first, kv.second.data(), kv.second.size());
#endif
    }
  });
  return Napi::Number::New(env, total);
}

// scaleInPlace(tensors, s): x *= s for every tensor.
Napi::Value ScaleInPlace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "scaleInPlace";
  auto byDevice = normTensors(env, info[0], op, true);
  float s = float(argFinite(env, info[1], op, "s"));
  runKernel(env, op, [&] {
    for (auto& kv : byDevice) {
      if (kv.first == kCpu) cpu::scaleInPlace(kv.second.data(), kv.second.size(), s);
#ifdef FA_WITH_CUDA
      else cuda::scaleInPlace(kv.first, kv.second.data(), kv.second.size(), s);
#endif
    }
  });
  return env.Undefined();
}

}  // namespace

void registerOptimOps(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New(env, AdamWStep, "adamwStep"));
  exports.Set("sumOfSquares", Napi::Function::New(env, SumOfSquares, "sumOfSquares"));
  exports.Set("scaleInPlace", Napi::Function::New(env, ScaleInPlace, "scaleInPlace"));
}

}  // namespace fa
