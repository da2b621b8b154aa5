// Bindings for the bottleneck adapter: forward, backward, and many adapters in one batch.
#include <cmath>

#include "adapter.h"
#include "cpu/adapter.h"
#include "ops.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/adapter.h"
#endif

namespace fa {

namespace {

struct Checker {
  Napi::Env env;
  const char* op;
  const TensorImpl& x;

  void like(const TensorImpl& t, const char* name, const std::vector<int64_t>& shape) const {
    if (t.shape != shape) {
      TensorImpl want;
      want.shape = shape;
      fail(env, op, std::string("argument '") + name + "' has shape " + t.shapeString() + ", expected " +
                        want.shapeString());
    }
    same(t, name);
  }
  void same(const TensorImpl& t, const char* name) const {
    if (t.dtype != x.dtype)
      fail(env, op, std::string("argument '") + name + "' is " + dtypeName(t.dtype) + " but 'x' is " + dtypeName(x.dtype));
    if (t.device != x.device)
      fail(env, op, std::string("argument '") + name + "' is on " + t.deviceString() + " but 'x' is on " +
                        x.deviceString());
  }
};

double number(Napi::Env env, Napi::Value v, const char* op, const char* name) {
  if (!v.IsNumber()) fail(env, op, std::string("argument '") + name + "' must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) fail(env, op, std::string("argument '") + name + "' must be finite");
  return d;
}

Act activation(Napi::Env env, Napi::Value v, const char* op) {
  Act a;
  if (!v.IsString() || !parseAct(v.As<Napi::String>().Utf8Value().c_str(), &a))
    fail(env, op, "argument 'activation' must be one of 'relu', 'gelu', 'gelu_tanh', 'silu', 'identity'");
  return a;
}

std::string pathArg(Napi::Env env, Napi::Value v, const char* op) {
  std::string p = v.IsString() ? v.As<Napi::String>().Utf8Value() : "auto";
  if (p != "auto" && p != "fused" && p != "cublas")
    fail(env, op, "argument 'path' must be 'auto', 'fused' or 'cublas'");
  return p;
}

// Reads x, weights, scaling, activation, dropout and seed starting at info[first]:
// x, downW, downB, upW, upB, scaleT|null, scale, activation, dropout, seed
AdapterArgs readArgs(const Napi::CallbackInfo& info, const char* op, const TensorImpl*& xOut) {
  Napi::Env env = info.Env();
  TensorImpl& x = argTensor(env, info[0], op, "x");
  xOut = &x;
  if (!isFloat(x.dtype)) fail(env, op, "argument 'x' must be a floating-point tensor");
  if (x.shape.size() < 2) fail(env, op, "argument 'x' must be [N, d] or [B, T, d], got " + x.shapeString());
  TensorImpl& dw = argTensor(env, info[1], op, "downWeight");
  TensorImpl& db = argTensor(env, info[2], op, "downBias");
  TensorImpl& uw = argTensor(env, info[3], op, "upWeight");
  TensorImpl& ub = argTensor(env, info[4], op, "upBias");
  int64_t d = x.shape.back();
  if (dw.shape.size() != 2) fail(env, op, "argument 'downWeight' must be [r, d], got " + dw.shapeString());
  int64_t r = dw.shape[0];
  Checker c{env, op, x};
  c.like(dw, "downWeight", {r, d});
  c.like(db, "downBias", {r});
  c.like(uw, "upWeight", {d, r});
  c.like(ub, "upBias", {d});
  AdapterArgs a;
  a.dtype = x.dtype;
  a.d = int(d);
  a.r = int(r);
  a.N = d ? int(x.numel() / size_t(d)) : 0;
  if (d == 0 || r == 0) fail(env, op, "d and r must be at least 1 (x " + x.shapeString() + ", downWeight " + dw.shapeString() + ")");
  if (x.numel() / size_t(d) > 0x7fffffffu) fail(env, op, "too many rows");
  a.x = x.ptr();
  a.downW = dw.ptr();
  a.downB = db.ptr();
  a.upW = uw.ptr();
  a.upB = ub.ptr();
  if (!info[5].IsNull() && !info[5].IsUndefined()) {
    TensorImpl& s = argTensor(env, info[5], op, "scaling");
    if (s.shape.size() != 1 || (s.shape[0] != 1 && s.shape[0] != d))
      fail(env, op, "argument 'scaling' must be [1] or [d] = [" + std::to_string(d) + "], got " + s.shapeString());
    c.same(s, "scaling");
    a.scaleT = s.ptr();
    a.scaleLen = int(s.shape[0]);
  }
  a.scale = float(number(env, info[6], op, "scaling"));
  a.act = activation(env, info[7], op);
  double p = number(env, info[8], op, "dropout");
  if (p < 0 || p >= 1) fail(env, op, "argument 'dropout' must be in [0, 1)");
  a.dropout = float(p);
  double seed = number(env, info[9], op, "seed");
  if (seed < 0 || seed != std::floor(seed) || seed > 9007199254740991.0)
    fail(env, op, "argument 'seed' must be a non-negative integer");
  a.seed = uint64_t(seed);
  return a;
}

// adapterForward(x, dw, db, uw, ub, scaleT, scale, act, dropout, seed, residual|null, path)
Napi::Value AdapterForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "adapterForward";
  const TensorImpl* xp;
  AdapterArgs a = readArgs(info, op, xp);
  const TensorImpl& x = *xp;
  if (!info[10].IsNull() && !info[10].IsUndefined()) {
    TensorImpl& res = argTensor(env, info[10], op, "residual");
    Checker{env, op, x}.like(res, "residual", x.shape);
    a.residual = res.ptr();
  }
  std::string path = pathArg(env, info[11], op);
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, op);
  Napi::Object hPre = newTensor(env, {a.N, a.r}, DType::F32, x.device, op);
  float* hp = static_cast<float*>(implOf(hPre).ptr());
  void* o = implOf(out).ptr();
  std::string used = "cpu";
  const int dev = x.device;
  auto work = [=, &used] {
    if (dev == kCpu) cpu::adapterForward(a, o, hp);
#ifdef FA_WITH_CUDA
    else used = cuda::adapterForward(dev, a, o, hp, path);
#endif
  };
  Napi::Object res = Napi::Object::New(env);
  res.Set("out", out);
  res.Set("hPre", hPre);
  if (info[12].ToBoolean() && dev == kCpu) {  // the CPU runs it off the JS thread; CUDA launches at once
    res.Set("path", used);
    return runKernelAsync(env, op, true, res, heldArguments(info), [=] { cpu::adapterForward(a, o, hp); });
  }
  if (dev == kCpu && deferring()) {
    enqueueDeferred(op, [=] { cpu::adapterForward(a, o, hp); });
    res.Set("path", used);
    return res;
  }
  runKernel(env, op, work);
  res.Set("path", used);
  return res;
}

// adapterBackward(x, dw, db, uw, ub, scaleT, scale, act, dropout, seed, dOut, hPre, residualIsX, path)
Napi::Value AdapterBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "adapterBackward";
  const TensorImpl* xp;
  AdapterArgs a = readArgs(info, op, xp);
  const TensorImpl& x = *xp;
  TensorImpl& dOut = argTensor(env, info[10], op, "dOut");
  Checker{env, op, x}.like(dOut, "dOut", x.shape);
  TensorImpl& hPre = argTensor(env, info[11], op, "hPre");
  if (hPre.dtype != DType::F32 || hPre.device != x.device || hPre.shape != std::vector<int64_t>{a.N, a.r})
    fail(env, op, "argument 'hPre' does not belong to this forward pass");
  bool residualIsX = info[12].ToBoolean();
  std::string path = pathArg(env, info[13], op);
  Napi::Object dx = newTensor(env, x.shape, x.dtype, x.device, op);
  Napi::Object dDownW = newTensor(env, {a.r, a.d}, DType::F32, x.device, op);
  Napi::Object dDownB = newTensor(env, {a.r}, DType::F32, x.device, op);
  Napi::Object dUpW = newTensor(env, {a.d, a.r}, DType::F32, x.device, op);
  Napi::Object dUpB = newTensor(env, {a.d}, DType::F32, x.device, op);
  Napi::Object res = Napi::Object::New(env);
  AdapterGrads g;
  g.dx = implOf(dx).ptr();
  g.dDownW = static_cast<float*>(implOf(dDownW).ptr());
  g.dDownB = static_cast<float*>(implOf(dDownB).ptr());
  g.dUpW = static_cast<float*>(implOf(dUpW).ptr());
  g.dUpB = static_cast<float*>(implOf(dUpB).ptr());
  g.addDOutToDx = residualIsX;
  if (a.scaleT) {
    Napi::Object dS = newTensor(env, {a.scaleLen}, DType::F32, x.device, op);
    g.dScale = static_cast<float*>(implOf(dS).ptr());
    res.Set("dScaling", dS);
  }
  std::string used = "cpu";
  const float* hp = static_cast<const float*>(hPre.ptr());
  res.Set("dx", dx);
  res.Set("dDownWeight", dDownW);
  res.Set("dDownBias", dDownB);
  res.Set("dUpWeight", dUpW);
  res.Set("dUpBias", dUpB);
  if (info[14].ToBoolean() && x.device == kCpu) {  // the CPU runs it off the JS thread; CUDA launches at once
    res.Set("path", used);
    const void* dp = dOut.ptr();
    return runKernelAsync(env, op, true, res, heldArguments(info), [=] { cpu::adapterBackward(a, dp, hp, g); });
  }
  if (x.device == kCpu && deferring()) {
    const void* dp = dOut.ptr();
    enqueueDeferred(op, [=] { cpu::adapterBackward(a, dp, hp, g); });
    res.Set("path", used);
    return res;
  }
  runKernel(env, op, [&] {
    if (x.device == kCpu) cpu::adapterBackward(a, dOut.ptr(), hp, g);
#ifdef FA_WITH_CUDA
    else used = cuda::adapterBackward(x.device, a, dOut.ptr(), hp, g, path);
#endif
  });
  res.Set("path", used);
  return res;
}

// adapterForwardBatched(x [N, d], dw [A, r, d], db [A, r], uw [A, d, r], ub [A, d],
//                       rowAdapter Int32Array [N], scales Float32Array [A], act, path, residual|null)
Napi::Value AdapterForwardBatched(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "adapterForwardBatched";
  TensorImpl& x = argTensor(env, info[0], op, "x");
  if (!isFloat(x.dtype)) fail(env, op, "argument 'x' must be a floating-point tensor");
  if (x.shape.size() < 2) fail(env, op, "argument 'x' must be [N, d], got " + x.shapeString());
  TensorImpl& dw = argTensor(env, info[1], op, "downWeight");
  TensorImpl& db = argTensor(env, info[2], op, "downBias");
  TensorImpl& uw = argTensor(env, info[3], op, "upWeight");
  TensorImpl& ub = argTensor(env, info[4], op, "upBias");
  if (dw.shape.size() != 3) fail(env, op, "argument 'downWeight' must be [A, r, d], got " + dw.shapeString());
  int64_t A = dw.shape[0], r = dw.shape[1], d = x.shape.back();
  Checker c{env, op, x};
  c.like(dw, "downWeight", {A, r, d});
  c.like(db, "downBias", {A, r});
  c.like(uw, "upWeight", {A, d, r});
  c.like(ub, "upBias", {A, d});
  if (A == 0 || r == 0 || d == 0) fail(env, op, "A, r and d must be at least 1");
  size_t N = x.numel() / size_t(d);
  if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    fail(env, op, "argument 'rowAdapter' must be an Int32Array");
  Napi::Int32Array rows = info[5].As<Napi::Int32Array>();
  if (rows.ElementLength() != N)
    fail(env, op, "argument 'rowAdapter' has length " + std::to_string(rows.ElementLength()) + ", x has " +
                      std::to_string(N) + " rows");
  for (size_t i = 0; i < N; i++)
    if (rows[i] < -1 || rows[i] >= A)
      fail(env, op, "argument 'rowAdapter' has index " + std::to_string(rows[i]) + " at row " + std::to_string(i) +
                        "; valid indices are -1 (pass through) to " + std::to_string(A - 1));
  if (!info[6].IsTypedArray() || info[6].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
      info[6].As<Napi::TypedArray>().ElementLength() != size_t(A))
    fail(env, op, "argument 'scaling' must be a Float32Array of one scale per adapter");
  Napi::Float32Array scales = info[6].As<Napi::Float32Array>();
  BatchedArgs b;
  b.base.dtype = x.dtype;
  b.base.N = int(N);
  b.base.d = int(d);
  b.base.r = int(r);
  b.base.x = x.ptr();
  b.base.downW = dw.ptr();
  b.base.downB = db.ptr();
  b.base.upW = uw.ptr();
  b.base.upB = ub.ptr();
  b.base.act = activation(env, info[7], op);
  b.numAdapters = int(A);
  std::vector<int32_t> rowCopy(rows.Data(), rows.Data() + N);
  std::vector<float> scaleCopy(scales.Data(), scales.Data() + A);
  b.rowAdapter = rowCopy.data();
  b.scales = scaleCopy.data();
  std::string path = pathArg(env, info[8], op);
  if (!info[9].IsNull() && !info[9].IsUndefined()) {
    TensorImpl& res = argTensor(env, info[9], op, "residual");
    c.like(res, "residual", x.shape);
    b.base.residual = res.ptr();
  }
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, op);
  void* o = implOf(out).ptr();
  std::string used = "cpu";
  if (x.device == kCpu && deferring()) {  // the queued kernel keeps its own copies of the host arrays
    enqueueDeferred(op, [b, o, rowCopy, scaleCopy]() mutable {
      b.rowAdapter = rowCopy.data();
      b.scales = scaleCopy.data();
      cpu::adapterForwardBatched(b, o);
    });
  } else {
    runKernel(env, op, [&] {
      if (x.device == kCpu) cpu::adapterForwardBatched(b, o);
#ifdef FA_WITH_CUDA
      else used = cuda::adapterForwardBatched(x.device, b, o, path);
#endif
    });
  }
  Napi::Object res = Napi::Object::New(env);
  res.Set("out", out);
  res.Set("path", used);
  return res;
}

}  // namespace

void registerAdapterOps(Napi::Env env, Napi::Object exports) {
  exports.Set("adapterForward", Napi::Function::New(env, AdapterForward, "adapterForward"));
  exports.Set("adapterBackward", Napi::Function::New(env, AdapterBackward, "adapterBackward"));
  exports.Set("adapterForwardBatched", Napi::Function::New(env, AdapterForwardBatched, "adapterForwardBatched"));
}

}  // namespace fa
