// Bindings for the basic ops: matmul, add, mul, scale, fill, random fill, sums.
#include "ops.h"

#include <cstring>

#include "activation.h"
#include "cpu/basic.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/basic.h"
#include "../cuda/cublas.h"
#include "../cuda/runtime.h"
#endif

// Calls cpu::NAME(args...) or cuda::NAME(device, args...).
#ifdef FA_WITH_CUDA
#define FA_DISPATCH(device, NAME, ...)              \
  do {                                              \
    if ((device) == ::fa::kCpu) cpu::NAME(__VA_ARGS__); \
    else cuda::NAME((device), __VA_ARGS__);         \
  } while (0)
#else
#define FA_DISPATCH(device, NAME, ...) cpu::NAME(__VA_ARGS__)
#endif

namespace fa {

namespace {

void sameDevice(Napi::Env env, const char* op, const TensorImpl& a, const char* an, const TensorImpl& b, const char* bn) {
  if (a.device != b.device)
    fail(env, op, std::string("argument '") + bn + "' is on " + b.deviceString() + " but '" + an + "' is on " +
                      a.deviceString());
}

void sameDType(Napi::Env env, const char* op, const TensorImpl& a, const char* an, const TensorImpl& b, const char* bn) {
  if (a.dtype != b.dtype)
    fail(env, op, std::string("argument '") + bn + "' is " + dtypeName(b.dtype) + " but '" + an + "' is " +
                      dtypeName(a.dtype));
}

void floatOnly(Napi::Env env, const char* op, const TensorImpl& a, const char* an) {
  if (!isFloat(a.dtype)) fail(env, op, std::string("argument '") + an + "' must be a floating-point tensor, got int32");
}

double argNumber(Napi::Env env, Napi::Value v, const char* op, const char* name) {
  if (!v.IsNumber()) fail(env, op, std::string("argument '") + name + "' must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) fail(env, op, std::string("argument '") + name + "' must be finite");
  return d;
}

// b broadcasts over a when b's shape is a suffix of a's shape.
size_t broadcastCount(Napi::Env env, const char* op, const TensorImpl& a, const TensorImpl& b) {
  bool ok = b.shape.size() <= a.shape.size();
  for (size_t i = 0; ok && i < b.shape.size(); i++)
    ok = b.shape[b.shape.size() - 1 - i] == a.shape[a.shape.size() - 1 - i];
  if (!ok || (b.numel() == 0 && a.numel() != 0))
    fail(env, op, "argument 'b' has shape " + b.shapeString() + ", which does not match or broadcast to " +
                      a.shapeString());
  return b.numel();
}

// matmul(a, b, transA, transB): op(a) . op(b)
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "matmul";
  TensorImpl& a = argTensor(env, info[0], op, "a");
  TensorImpl& b = argTensor(env, info[1], op, "b");
  bool tA = info[2].ToBoolean(), tB = info[3].ToBoolean();
  floatOnly(env, op, a, "a");
  sameDType(env, op, a, "a", b, "b");
  sameDevice(env, op, a, "a", b, "b");
  size_t ra = a.shape.size(), rb = b.shape.size();
  if (ra < 2) fail(env, op, "argument 'a' must have at least 2 dimensions, got shape " + a.shapeString());
  if (rb != 2 && rb != 3) fail(env, op, "argument 'b' must have 2 or 3 dimensions, got shape " + b.shapeString());
  int batch = 1;
  int64_t M, K, Kb, N;
  std::vector<int64_t> outShape;
  if (rb == 3) {
    if (ra != 3 || a.shape[0] != b.shape[0])
      fail(env, op, "batched matmul needs 'a' and 'b' of shape [B, ., .] with the same B; got " + a.shapeString() +
                        " and " + b.shapeString());
    batch = int(a.shape[0]);
    M = tA ? a.shape[2] : a.shape[1];
    K = tA ? a.shape[1] : a.shape[2];
    outShape = {a.shape[0]};
  } else if (ra > 2) {
    if (tA) fail(env, op, "transA needs a 2-D 'a' when 'b' is 2-D; got " + a.shapeString());
    K = a.shape[ra - 1];
    M = int64_t(a.numel() / (K ? K : 1));
    if (K == 0) { M = 1; for (size_t i = 0; i + 1 < ra; i++) M *= a.shape[i]; }
    outShape.assign(a.shape.begin(), a.shape.end() - 1);
  } else {
    M = tA ? a.shape[1] : a.shape[0];
    K = tA ? a.shape[0] : a.shape[1];
    outShape = {M};
  }
  Kb = tB ? b.shape[rb - 1] : b.shape[rb - 2];
  N = tB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (Kb != K)
    fail(env, op, "inner dimensions differ: op(a) " + a.shapeString() + " has K=" + std::to_string(K) + ", op(b) " +
                      b.shapeString() + " has K=" + std::to_string(Kb));
  if (M > INT32_MAX)  // the GEMMs take int dimensions
    fail(env, op, "op(a) " + a.shapeString() + " has " + std::to_string(M) + " rows; at most 2^31 - 1 are supported");
  if (rb == 3) outShape.push_back(M);
  outShape.push_back(N);
  Napi::Object out = newTensor(env, outShape, a.dtype, a.device, op);
  TensorImpl& c = implOf(out);
  int lda = int(a.shape[ra - 1]), ldb = int(b.shape[rb - 1]);
  long long sA = rb == 3 ? (long long)(a.shape[1] * a.shape[2]) : 0;
  long long sB = rb == 3 ? (long long)(b.shape[1] * b.shape[2]) : 0;
  long long sC = (long long)(M * N);
  const int dev = a.device;
  const DType dt = a.dtype;
  const void* ap = a.ptr();
  const void* bp = b.ptr();
  void* cp = c.ptr();
  auto work = [=] {
    FA_DISPATCH(dev, gemm, dt, tA, tB, int(M), int(N), int(K), 1.0f, ap, lda, sA, bp, ldb, sB, 0.0f, cp, int(N), sC, batch, op);
  };
  if (info[4].ToBoolean()) return runKernelAsync(env, op, dev == kCpu, out, heldArguments(info), work);
  deferKernel(env, op, dev, work);
  return out;
}

// The operands of add/mul: same dtype and device, b equal to a or a broadcast suffix of it.
struct Binary {
  TensorImpl a;  // copies: a queued kernel (deferred.h) must not reach into the JS objects
  TensorImpl b;
  size_t nb;  // b's element count
};

Binary binaryArgs(Napi::Env env, const Napi::CallbackInfo& info, const char* op) {
  TensorImpl& a = argTensor(env, info[0], op, "a");
  TensorImpl& b = argTensor(env, info[1], op, "b");
  floatOnly(env, op, a, "a");
  sameDType(env, op, a, "a", b, "b");
  sameDevice(env, op, a, "a", b, "b");
  return Binary{a, b, broadcastCount(env, op, a, b)};
}

// add(a, b, alpha): a + alpha·b
Napi::Value Add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "add";
  Binary x = binaryArgs(env, info, op);
  float alpha = info[2].IsUndefined() ? 1.0f : float(argNumber(env, info[2], op, "alpha"));
  Napi::Object out = newTensor(env, x.a.shape, x.a.dtype, x.a.device, op);
  TensorImpl& o = implOf(out);
  deferKernel(env, op, x.a.device, [=] {
    FA_DISPATCH(x.a.device, add, x.a.dtype, x.a.ptr(), x.b.ptr(), o.ptr(), x.a.numel(), x.nb, alpha);
  });
  return out;
}

// mul(a, b): a ⊙ b
Napi::Value Mul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "mul";
  Binary x = binaryArgs(env, info, op);
  Napi::Object out = newTensor(env, x.a.shape, x.a.dtype, x.a.device, op);
  TensorImpl& o = implOf(out);
  deferKernel(env, op, x.a.device, [=] { FA_DISPATCH(x.a.device, mul, x.a.dtype, x.a.ptr(), x.b.ptr(), o.ptr(), x.a.numel(), x.nb); });
  return out;
}

Napi::Value Scale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "scale";
  TensorImpl& a = argTensor(env, info[0], op, "a");
  float s = float(argNumber(env, info[1], op, "s"));
  floatOnly(env, op, a, "a");
  Napi::Object out = newTensor(env, a.shape, a.dtype, a.device, op);
  TensorImpl& o = implOf(out);
  deferKernel(env, op, a.device, [=] { FA_DISPATCH(a.device, scale, a.dtype, a.ptr(), o.ptr(), a.numel(), s); });
  return out;
}

// fill(t, value): in place
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "fill";
  TensorImpl& t = argTensor(env, info[0], op, "t");
  float v = float(argNumber(env, info[1], op, "value"));
  deferKernel(env, op, t.device, [=] { FA_DISPATCH(t.device, fill, t.dtype, t.ptr(), t.numel(), v); });
  return env.Undefined();
}

// randomFill(t, seed, kind 'normal'|'uniform', a, b): in place; normal(mean=a, std=b) or uniform[a, b)
Napi::Value RandomFill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "randomFill";
  TensorImpl& t = argTensor(env, info[0], op, "t");
  floatOnly(env, op, t, "t");
  double seedD = argNumber(env, info[1], op, "seed");
  if (seedD < 0 || seedD > 9007199254740991.0 || seedD != double(uint64_t(seedD)))
    fail(env, op, "argument 'seed' must be a non-negative integer");
  std::string kind = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  if (kind != "normal" && kind != "uniform") fail(env, op, "argument 'kind' must be 'normal' or 'uniform'");
  float a = float(argNumber(env, info[3], op, "a")), b = float(argNumber(env, info[4], op, "b"));
  uint64_t seed = uint64_t(seedD);
  bool normal = kind == "normal";
  deferKernel(env, op, t.device, [=] { FA_DISPATCH(t.device, randomFill, t.dtype, t.ptr(), t.numel(), seed, normal, a, b); });
  return env.Undefined();
}

Act argAct(Napi::Env env, Napi::Value v, const char* op) {
  Act a;
  if (!v.IsString() || !parseAct(v.As<Napi::String>().Utf8Value().c_str(), &a))
    fail(env, op, "argument 'activation' must be one of 'relu', 'gelu', 'gelu_tanh', 'silu', 'identity', 'tanh'");
  return a;
}

// activation(x, name) -> act(x)
Napi::Value Activation(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "activation";
  TensorImpl& x = argTensor(env, info[0], op, "x");
  floatOnly(env, op, x, "x");
  Act act = argAct(env, info[1], op);
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, op);
  TensorImpl& o = implOf(out);
  deferKernel(env, op, x.device, [=] { FA_DISPATCH(x.device, activation, x.dtype, x.ptr(), o.ptr(), x.numel(), act); });
  return out;
}

// activationGrad(x, dy, name) -> dy ⊙ act'(x)
Napi::Value ActivationGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "activationGrad";
  TensorImpl& x = argTensor(env, info[0], op, "x");
  TensorImpl& dy = argTensor(env, info[1], op, "dy");
  floatOnly(env, op, x, "x");
  sameDType(env, op, x, "x", dy, "dy");
  sameDevice(env, op, x, "x", dy, "dy");
  if (dy.shape != x.shape) fail(env, op, "argument 'dy' has shape " + dy.shapeString() + ", 'x' has " + x.shapeString());
  Act act = argAct(env, info[2], op);
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, op);
  TensorImpl& o = implOf(out);
  deferKernel(env, op, x.device, [=] { FA_DISPATCH(x.device, activationGrad, x.dtype, x.ptr(), dy.ptr(), o.ptr(), x.numel(), act); });
  return out;
}

// rowSum(x): sums over the last dimension -> shape[:-1]
Napi::Value RowSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "rowSum";
  TensorImpl& x = argTensor(env, info[0], op, "x");
  floatOnly(env, op, x, "x");
  if (x.shape.empty()) fail(env, op, "argument 'x' must have at least 1 dimension");
  size_t cols = size_t(x.shape.back()), rows = cols ? x.numel() / cols : 0;
  std::vector<int64_t> shape(x.shape.begin(), x.shape.end() - 1);
  if (!cols) { rows = 1; for (int64_t s : shape) rows *= size_t(s); }
  Napi::Object out = newTensor(env, shape, x.dtype, x.device, op);
  TensorImpl& o = implOf(out);
  deferKernel(env, op, x.device, [=] {
    if (cols == 0) FA_DISPATCH(x.device, fill, x.dtype, o.ptr(), rows, 0.0f);
    else FA_DISPATCH(x.device, rowSum, x.dtype, x.ptr(), o.ptr(), rows, cols);
  });
  return out;
}

// colSum(x): sums over every dimension but the last -> [shape[-1]]
Napi::Value ColSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "colSum";
  TensorImpl& x = argTensor(env, info[0], op, "x");
  floatOnly(env, op, x, "x");
  if (x.shape.empty()) fail(env, op, "argument 'x' must have at least 1 dimension");
  size_t cols = size_t(x.shape.back()), rows = cols ? x.numel() / cols : 0;
  Napi::Object out = newTensor(env, {int64_t(cols)}, x.dtype, x.device, op);
  TensorImpl& o = implOf(out);
  deferKernel(env, op, x.device, [=] {
    if (rows == 0) FA_DISPATCH(x.device, fill, x.dtype, o.ptr(), cols, 0.0f);
    else FA_DISPATCH(x.device, colSum, x.dtype, x.ptr(), o.ptr(), rows, cols);
  });
  return out;
}

// stack(list) -> [A, ...shape]: tensors of one shape, dtype and device, one after another
Napi::Value Stack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "stack";
  if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0)
    fail(env, op, "argument 'tensors' must be a non-empty array of tensors");
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<TensorImpl*> ts;
  for (uint32_t i = 0; i < list.Length(); i++) {
    std::string name = "tensors[" + std::to_string(i) + "]";
    ts.push_back(&argTensor(env, list.Get(i), op, name.c_str()));
    if (i == 0) continue;
    if (ts[i]->shape != ts[0]->shape)
      fail(env, op, "argument '" + name + "' has shape " + ts[i]->shapeString() + ", 'tensors[0]' has " + ts[0]->shapeString());
    sameDType(env, op, *ts[0], "tensors[0]", *ts[i], name.c_str());
    sameDevice(env, op, *ts[0], "tensors[0]", *ts[i], name.c_str());
  }
  std::vector<int64_t> shape{int64_t(ts.size())};
  shape.insert(shape.end(), ts[0]->shape.begin(), ts[0]->shape.end());
  Napi::Object out = newTensor(env, shape, ts[0]->dtype, ts[0]->device, op);
  char* dst = static_cast<char*>(implOf(out).ptr());
  size_t bytes = ts[0]->bytes();
  std::vector<TensorImpl> parts;  // copies: the kernel may be queued (deferred.h)
  for (TensorImpl* t : ts) parts.push_back(*t);
  deferKernel(env, op, ts[0]->device, [=] {
    for (size_t k = 0; k < parts.size(); k++) {
      if (parts[k].device == kCpu) std::memcpy(dst + k * bytes, parts[k].ptr(), bytes);
#ifdef FA_WITH_CUDA
      else cuda::copyDeviceToDevice(parts[k].device, parts[k].ptr(), parts[k].device, dst + k * bytes, bytes, op);
#endif
    }
  });
  return out;
}

}  // namespace

void registerBasicOps(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, Matmul, "matmul"));
  exports.Set("stack", Napi::Function::New(env, Stack, "stack"));
  exports.Set("add", Napi::Function::New(env, Add, "add"));
  exports.Set("mul", Napi::Function::New(env, Mul, "mul"));
  exports.Set("scale", Napi::Function::New(env, Scale, "scale"));
  exports.Set("fill", Napi::Function::New(env, Fill, "fill"));
  exports.Set("randomFill", Napi::Function::New(env, RandomFill, "randomFill"));
  exports.Set("activation", Napi::Function::New(env, Activation, "activation"));
  exports.Set("activationGrad", Napi::Function::New(env, ActivationGrad, "activationGrad"));
  exports.Set("rowSum", Napi::Function::New(env, RowSum, "rowSum"));
  exports.Set("colSum", Napi::Function::New(env, ColSum, "colSum"));
}

}  // namespace fa
