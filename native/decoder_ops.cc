// Bindings for the decoder building blocks: rmsNorm, rope, fused attention and their backward
// passes (see native/cpu/decoder.h, native/cpu/attention.h).
#include <cmath>

#include "activation.h"
#include "args.h"
#include "cpu/attention.h"
#include "cpu/decoder.h"
#include "ops.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/attention.h"
#include "../cuda/decoder.h"
#endif

namespace fa {

namespace {

// rmsNorm(x [..., H], weight [H], eps) -> { out, rstd fp32 [...] }
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "rmsNorm"};
  TensorImpl& x = a.tensor(info[0], "x");
  a.floating(x, "x");
  a.minRank(x, "x", 1, "[..., H]");
  int64_t H = x.shape.back();
  if (H < 1) a.error("argument 'x' must have a last dimension of at least 1, got shape " + x.shapeString());
  TensorImpl& w = a.tensor(info[1], "weight");
  a.shape(w, "weight", {H});
  a.dtype(w, "weight", x.dtype, "x");
  a.device(w, "weight", x, "x");
  double eps = info[2].IsUndefined() ? 1e-6 : a.number(info[2], "eps");
  if (eps <= 0) a.error("argument 'eps' must be positive, got " + num(eps));
  std::vector<int64_t> rowShape = leading(x);
  size_t rows = product(rowShape);
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, a.op);
  Napi::Object rstd = newTensor(env, rowShape, DType::F32, x.device, a.op);
  void* o = implOf(out).ptr();
  float* rp = static_cast<float*>(implOf(rstd).ptr());
  deferKernel(env, a.op, x.device, [=] { FA_NN_DISPATCH(x.device, rmsNorm, x.dtype, x.ptr(), w.ptr(), o, rp, rows, size_t(H), float(eps)); });
  Napi::Object result = Napi::Object::New(env);
  result.Set("out", out);
  result.Set("rstd", rstd);
  return result;
}

// rmsNormBackward(dOut, x, weight, rstd) -> { dx, dWeight fp32 [H] }
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "rmsNormBackward"};
  TensorImpl& dOut = a.tensor(info[0], "dOut");
  TensorImpl& x = a.tensor(info[1], "x");
  a.floating(x, "x");
  a.minRank(x, "x", 1, "[..., H]");
  int64_t H = x.shape.back();
  if (H < 1) a.error("argument 'x' must have a last dimension of at least 1, got shape " + x.shapeString());
  a.like(dOut, "dOut", x, "x");
  TensorImpl& w = a.tensor(info[2], "weight");
  a.shape(w, "weight", {H});
  a.dtype(w, "weight", x.dtype, "x");
  a.device(w, "weight", x, "x");
  std::vector<int64_t> rowShape = leading(x);
  TensorImpl& rstd = a.tensor(info[3], "rstd");
  if (rstd.dtype != DType::F32) a.error("argument 'rstd' must be float32 (from rmsNorm), got " + std::string(dtypeName(rstd.dtype)));
  a.shape(rstd, "rstd", rowShape);
  a.device(rstd, "rstd", x, "x");
  size_t rows = product(rowShape);
  Napi::Object dx = newTensor(env, x.shape, x.dtype, x.device, a.op);
  Napi::Object dW = newTensor(env, {H}, DType::F32, x.device, a.op);
  void* dxp = implOf(dx).ptr();
  float* dWp = static_cast<float*>(implOf(dW).ptr());
  const float* rp = static_cast<const float*>(rstd.ptr());
  deferKernel(env, a.op, x.device, [=] {
    FA_NN_DISPATCH(x.device, rmsNormBackward, x.dtype, dOut.ptr(), x.ptr(), w.ptr(), rp, dxp, dWp, rows, size_t(H));
  });
  Napi::Object result = Napi::Object::New(env);
  result.Set("dx", dx);
  result.Set("dWeight", dW);
  return result;
}

// rope(x [..., heads, D], positions int32 [...], invFreq fp32 [rot/2], inverse) -> out
Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "rope"};
  TensorImpl& x = a.tensor(info[0], "x");
  a.floating(x, "x");
  a.minRank(x, "x", 2, "[..., heads, D]");
  TensorImpl& pos = a.tensor(info[1], "positions");
  a.int32(pos, "positions");
  a.device(pos, "positions", x, "x");
  std::vector<int64_t> tokShape(x.shape.begin(), x.shape.end() - 2);
  a.shape(pos, "positions", tokShape);
  TensorImpl& inv = a.tensor(info[2], "invFreq");
  if (inv.dtype != DType::F32) a.error("argument 'invFreq' must be float32, got " + std::string(dtypeName(inv.dtype)));
  if (inv.shape.size() != 1) a.error("argument 'invFreq' must be 1-D [rot/2], got shape " + inv.shapeString());
  a.device(inv, "invFreq", x, "x");
  size_t D = size_t(x.shape.back()), heads = size_t(x.shape[x.shape.size() - 2]);
  size_t rot = 2 * size_t(inv.shape[0]);
  if (rot > D) a.error("argument 'invFreq' has " + std::to_string(rot / 2) + " frequencies; a head of " + std::to_string(D) + " dims rotates at most " + std::to_string(D / 2));
  bool inverse = !absent(info[3]) && info[3].ToBoolean().Value();
  size_t tokens = product(tokShape);
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, a.op);
  void* o = implOf(out).ptr();
  const int32_t* pp = static_cast<const int32_t*>(pos.ptr());
  const float* ip = static_cast<const float*>(inv.ptr());
  deferKernel(env, a.op, x.device, [=] { FA_NN_DISPATCH(x.device, rope, x.dtype, x.ptr(), pp, ip, o, tokens, heads, D, rot, inverse); });
  return out;
}

// cacheWrite(cache [B, H, Tmax, D], src [B, H, n, D], offset): rows offset..offset+n of each head take src's, in place.
Napi::Value CacheWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "cacheWrite"};
  TensorImpl& c = a.tensor(info[0], "cache");
  TensorImpl& x = a.tensor(info[1], "src");
  if (c.shape.size() != 4) a.error("argument 'cache' must be [B, heads, Tmax, D], got shape " + c.shapeString());
  if (x.shape.size() != 4 || x.shape[0] != c.shape[0] || x.shape[1] != c.shape[1] || x.shape[3] != c.shape[3])
    a.error("argument 'src' has shape " + x.shapeString() + ", which does not fit 'cache' " + c.shapeString());
  a.dtype(x, "src", c.dtype, "cache");
  a.device(x, "src", c, "cache");
  size_t n = size_t(x.shape[2]), rows = size_t(c.shape[2]);
  size_t offset = size_t(a.integer(info[2], "offset", 0, double(rows)));
  if (offset + n > rows) a.error("writing " + std::to_string(n) + " rows at " + std::to_string(offset) + " overflows the cache of " + std::to_string(rows));
  size_t rowBytes = size_t(c.shape[3]) * dtypeSize(c.dtype), outer = size_t(c.shape[0] * c.shape[1]);
  deferKernel(env, a.op, c.device, [=] { FA_NN_DISPATCH(c.device, cacheWrite, c.ptr(), x.ptr(), outer, rows, n, rowBytes, offset); });
  return env.Undefined();
}

// The activation name argument of the gated ops.
int argAct(Args& a, Napi::Value v) {
  if (!v.IsString()) a.error("argument 'activation' must be a string");
  Act act;
  std::string name = v.As<Napi::String>().Utf8Value();
  if (!parseAct(name.c_str(), &act)) a.error("unknown activation '" + name + "'");
  return int(act);
}

// gatedActivation(gate, up, activation) -> act(gate) ⊙ up
Napi::Value GatedActivation(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "gatedActivation"};
  TensorImpl& g = a.tensor(info[0], "gate");
  a.floating(g, "gate");
  TensorImpl& u = a.tensor(info[1], "up");
  a.like(u, "up", g, "gate");
  int act = argAct(a, info[2]);
  Napi::Object out = newTensor(env, g.shape, g.dtype, g.device, a.op);
  void* o = implOf(out).ptr();
  deferKernel(env, a.op, g.device, [=] { FA_NN_DISPATCH(g.device, gatedActivation, g.dtype, g.ptr(), u.ptr(), o, g.numel(), act); });
  return out;
}

// gatedActivationBackward(dOut, gate, up, activation) -> { dGate, dUp }
Napi::Value GatedActivationBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "gatedActivationBackward"};
  TensorImpl& d = a.tensor(info[0], "dOut");
  TensorImpl& g = a.tensor(info[1], "gate");
  a.floating(g, "gate");
  a.like(d, "dOut", g, "gate");
  TensorImpl& u = a.tensor(info[2], "up");
  a.like(u, "up", g, "gate");
  int act = argAct(a, info[3]);
  Napi::Object dg = newTensor(env, g.shape, g.dtype, g.device, a.op);
  Napi::Object du = newTensor(env, g.shape, g.dtype, g.device, a.op);
  void* dgp = implOf(dg).ptr();
  void* dup = implOf(du).ptr();
  deferKernel(env, a.op, g.device, [=] {
    FA_NN_DISPATCH(g.device, gatedActivationBackward, g.dtype, d.ptr(), g.ptr(), u.ptr(), dgp, dup, g.numel(), act);
  });
  Napi::Object result = Napi::Object::New(env);
  result.Set("dGate", dg);
  result.Set("dUp", du);
  return result;
}

// q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D]: checked, with the key mask [B, Tk] (or null).
struct AttentionArgs {
  AttentionShape shape;
  const void* mask = nullptr;
  DType maskType = DType::F32;
};

AttentionArgs attentionArgs(Args& a, TensorImpl& q, TensorImpl& k, TensorImpl& v, Napi::Value maskV, Napi::Value scaleV,
                            Napi::Value causalV, Napi::Value segmentsV, Napi::Value kvLengthV = Napi::Value()) {
  a.floating(q, "q");
  if (q.shape.size() != 4) a.error("argument 'q' must be [B, heads, Tq, D], got shape " + q.shapeString());
  if (k.shape.size() != 4) a.error("argument 'k' must be [B, kvHeads, Tk, D], got shape " + k.shapeString());
  a.dtype(k, "k", q.dtype, "q");
  a.device(k, "k", q, "q");
  a.like(v, "v", k, "k");
  if (k.shape[0] != q.shape[0] || k.shape[3] != q.shape[3])
    a.error("argument 'k' has shape " + k.shapeString() + ", which does not match 'q' " + q.shapeString() + " in batch or head size");
  if (k.shape[1] < 1 || q.shape[1] % k.shape[1])
    a.error("the query heads (" + std::to_string(q.shape[1]) + ") must be a multiple of the key/value heads (" +
            std::to_string(k.shape[1]) + ")");
  AttentionArgs r;
  r.shape = {size_t(q.shape[0]), size_t(q.shape[1]), size_t(k.shape[1]), size_t(q.shape[2]), size_t(k.shape[2]),
             size_t(q.shape[3]), 1.0f, false, nullptr, 0};
  if (!kvLengthV.IsEmpty() && !absent(kvLengthV)) {
    // a KV cache: k and v hold k.shape[2] rows per head, of which the first kvLength are filled
    r.shape.kvStride = size_t(k.shape[2]);
    r.shape.Tk = size_t(a.integer(kvLengthV, "kvLength", 0, double(k.shape[2])));
  }
  r.shape.scale = scaleV.IsUndefined() ? float(1.0 / std::sqrt(double(q.shape[3]))) : float(a.number(scaleV, "scale"));
  r.shape.causal = !absent(causalV) && causalV.ToBoolean().Value();
  if (r.shape.causal && r.shape.Tq > r.shape.Tk) a.error("causal attention needs Tq <= Tk, got Tq " + std::to_string(r.shape.Tq) + " and Tk " + std::to_string(r.shape.Tk));
  if (!absent(maskV)) {
    TensorImpl& m = a.tensor(maskV, "keyMask");
    a.shape(m, "keyMask", {k.shape[0], k.shape[2]});  // the buffer's rows (a cache's full length)
    a.device(m, "keyMask", q, "q");
    r.mask = m.ptr();
    r.maskType = m.dtype;
  }
  if (!absent(segmentsV)) {
    TensorImpl& g = a.tensor(segmentsV, "segments");
    a.int32(g, "segments");
    if (q.shape[2] != k.shape[2] || r.shape.kvStride) a.error("segments need as many queries as keys (Tq = Tk, no cache)");
    a.shape(g, "segments", {k.shape[0], k.shape[2]});
    a.device(g, "segments", q, "q");
    r.shape.segments = static_cast<const int32_t*>(g.ptr());
  }
  return r;
}

// attention(q, k, v, keyMask|null, scale|undefined, causal, segments|undefined, kvLength|undefined) -> { out, lse }
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "attention"};
  TensorImpl& q = a.tensor(info[0], "q");
  TensorImpl& k = a.tensor(info[1], "k");
  TensorImpl& v = a.tensor(info[2], "v");
  AttentionArgs r = attentionArgs(a, q, k, v, info[3], info[4], info[5], info[6], info[7]);
  Napi::Object out = newTensor(env, q.shape, q.dtype, q.device, a.op);
  Napi::Object lse = newTensor(env, {q.shape[0], q.shape[1], q.shape[2]}, DType::F32, q.device, a.op);
  void* o = implOf(out).ptr();
  float* lp = static_cast<float*>(implOf(lse).ptr());
  deferKernel(env, a.op, q.device, [=] {
    FA_NN_DISPATCH(q.device, attention, q.dtype, q.ptr(), k.ptr(), v.ptr(), r.mask, r.maskType, o, lp, r.shape);
  });
  Napi::Object result = Napi::Object::New(env);
  result.Set("out", out);
  result.Set("lse", lse);
  return result;
}

// attentionBackward(q, k, v, out, dOut, lse, keyMask|null, scale|undefined, causal, segments|undefined) -> { dq, dk, dv }
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "attentionBackward"};
  TensorImpl& q = a.tensor(info[0], "q");
  TensorImpl& k = a.tensor(info[1], "k");
  TensorImpl& v = a.tensor(info[2], "v");
  AttentionArgs r = attentionArgs(a, q, k, v, info[6], info[7], info[8], info[9]);
  TensorImpl& out = a.tensor(info[3], "out");
  a.like(out, "out", q, "q");
  TensorImpl& dOut = a.tensor(info[4], "dOut");
  a.like(dOut, "dOut", q, "q");
  TensorImpl& lse = a.tensor(info[5], "lse");
  if (lse.dtype != DType::F32) a.error("argument 'lse' must be float32 (from attention), got " + std::string(dtypeName(lse.dtype)));
  a.shape(lse, "lse", {q.shape[0], q.shape[1], q.shape[2]});
  a.device(lse, "lse", q, "q");
  Napi::Object dq = newTensor(env, q.shape, q.dtype, q.device, a.op);
  Napi::Object dk = newTensor(env, k.shape, k.dtype, k.device, a.op);
  Napi::Object dv = newTensor(env, k.shape, k.dtype, k.device, a.op);
  void* dqp = implOf(dq).ptr();
  void* dkp = implOf(dk).ptr();
  void* dvp = implOf(dv).ptr();
  const float* lp = static_cast<const float*>(lse.ptr());
  deferKernel(env, a.op, q.device, [=] {
    FA_NN_DISPATCH(q.device, attentionBackward, q.dtype, q.ptr(), k.ptr(), v.ptr(), out.ptr(), dOut.ptr(), lp, r.mask,
                   r.maskType, dqp, dkp, dvp, r.shape);
  });
  Napi::Object result = Napi::Object::New(env);
  result.Set("dq", dq);
  result.Set("dk", dk);
  result.Set("dv", dv);
  return result;
}

}  // namespace

void registerDecoderOps(Napi::Env env, Napi::Object exports) {
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm, "rmsNorm"));
  exports.Set("rmsNormBackward", Napi::Function::New(env, RmsNormBackward, "rmsNormBackward"));
  exports.Set("rope", Napi::Function::New(env, Rope, "rope"));
  exports.Set("gatedActivation", Napi::Function::New(env, GatedActivation, "gatedActivation"));
  exports.Set("gatedActivationBackward", Napi::Function::New(env, GatedActivationBackward, "gatedActivationBackward"));
  exports.Set("cacheWrite", Napi::Function::New(env, CacheWrite, "cacheWrite"));
  exports.Set("attention", Napi::Function::New(env, Attention, "attention"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
}

}  // namespace fa
