// Bindings of AdapterFusion's attention (definition in native/fusion.h).
#include <string>

#include "args.h"
#include "cpu/fusion.h"
#include "ops.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/fusion.h"
#endif

namespace fa {

namespace {

// q [N, H], k and v [N, A, H]: one float dtype and device; the shape they give.
FusionShape fusionShape(Args& a, const TensorImpl& q, const TensorImpl& k, const TensorImpl& v) {
  a.floating(q, "q");
  if (q.shape.size() != 2) a.error("argument 'q' must be [N, H], got shape " + q.shapeString());
  if (k.shape.size() != 3) a.error("argument 'k' must be [N, A, H] (A adapters), got shape " + k.shapeString());
  FusionShape s;
  s.N = size_t(q.shape[0]);
  s.H = size_t(q.shape[1]);
  s.A = size_t(k.shape[1]);
  a.shape(k, "k", {q.shape[0], k.shape[1], q.shape[1]});
  a.dtype(k, "k", q.dtype, "q");
  a.device(k, "k", q, "q");
  a.like(v, "v", k, "k");
  if (s.A < 1) a.error("there must be at least one adapter output (k is " + k.shapeString() + ")");
#ifdef FA_WITH_CUDA
  if (q.device != kCpu && s.A > cuda::kFusionMaxAdapters)
    a.error("CUDA fuses at most " + std::to_string(cuda::kFusionMaxAdapters) + " adapters, got " + std::to_string(s.A));
#endif
  return s;
}

// The temperature, dropout probability and seed arguments at info[i..i+2].
void fusionOptions(Args& a, const Napi::CallbackInfo& info, size_t i, FusionShape& s) {
  double T = a.number(info[i], "temperature");
  if (T < 1) a.error("argument 'temperature' must be at least 1, got " + num(T));
  s.temperature = float(T);
  s.dropout = a.probability(info[i + 1], "dropout");
  s.seed = s.dropout > 0 ? a.seed(info[i + 2]) : 0;
}

// fusionAttention(q, k, v, temperature, dropout, seed) -> { out [N, H], probs fp32 [N, A] }
Napi::Value FusionAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "fusionAttention"};
  TensorImpl& q = a.tensor(info[0], "q");
  TensorImpl& k = a.tensor(info[1], "k");
  TensorImpl& v = a.tensor(info[2], "v");
  FusionShape s = fusionShape(a, q, k, v);
  fusionOptions(a, info, 3, s);
  Napi::Object out = newTensor(env, q.shape, q.dtype, q.device, a.op);
  Napi::Object probs = newTensor(env, {int64_t(s.N), int64_t(s.A)}, DType::F32, q.device, a.op);
  void* o = implOf(out).ptr();
  float* pp = static_cast<float*>(implOf(probs).ptr());
  const void *qp = q.ptr(), *kp = k.ptr(), *vp = v.ptr();
  const int dev = q.device;
  const DType dt = q.dtype;
  deferKernel(env, a.op, dev, [=] { FA_NN_DISPATCH(dev, fusionAttention, dt, qp, kp, vp, o, pp, s); });
  Napi::Object result = Napi::Object::New(env);
  result.Set("out", out);
  result.Set("probs", probs);
  return result;
}

// fusionAttentionBackward(dOut, q, k, v, probs, temperature, dropout, seed) -> { dq, dk, dv }
Napi::Value FusionAttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "fusionAttentionBackward"};
  TensorImpl& dOut = a.tensor(info[0], "dOut");
  TensorImpl& q = a.tensor(info[1], "q");
  TensorImpl& k = a.tensor(info[2], "k");
  TensorImpl& v = a.tensor(info[3], "v");
  TensorImpl& probs = a.tensor(info[4], "probs");
  FusionShape s = fusionShape(a, q, k, v);
  a.like(dOut, "dOut", q, "q");
  if (probs.dtype != DType::F32) a.error("argument 'probs' must be float32 (from fusionAttention), got " + std::string(dtypeName(probs.dtype)));
  a.shape(probs, "probs", {int64_t(s.N), int64_t(s.A)});
  a.device(probs, "probs", q, "q");
  fusionOptions(a, info, 5, s);
  Napi::Object dq = newTensor(env, q.shape, q.dtype, q.device, a.op);
  Napi::Object dk = newTensor(env, k.shape, k.dtype, k.device, a.op);
  Napi::Object dv = newTensor(env, v.shape, v.dtype, v.device, a.op);
  void *dqp = implOf(dq).ptr(), *dkp = implOf(dk).ptr(), *dvp = implOf(dv).ptr();
  const void *dp = dOut.ptr(), *qp = q.ptr(), *kp = k.ptr(), *vp = v.ptr();
  const float* pp = static_cast<const float*>(probs.ptr());
  const int dev = q.device;
  const DType dt = q.dtype;
  deferKernel(env, a.op, dev, [=] { FA_NN_DISPATCH(dev, fusionAttentionBackward, dt, dp, qp, kp, vp, pp, dqp, dkp, dvp, s); });
  Napi::Object result = Napi::Object::New(env);
  result.Set("dq", dq);
  result.Set("dk", dk);
  result.Set("dv", dv);
  return result;
}

}  // namespace

void registerFusionOps(Napi::Env env, Napi::Object exports) {
  exports.Set("fusionAttention", Napi::Function::New(env, FusionAttention, "fusionAttention"));
  exports.Set("fusionAttentionBackward", Napi::Function::New(env, FusionAttentionBackward, "fusionAttentionBackward"));
}

}  // namespace fa
