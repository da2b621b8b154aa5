// Bindings for the transformer building blocks: layerNorm, maskedSoftmax, transpose12,
// embedding, dropout, softmaxCrossEntropy and their backward passes (see native/cpu/nn.h).
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "cpu/nn.h"
#include "ops.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/nn.h"
#endif

namespace fa {

namespace {

// "position 7 (index [1, 3])" for flat position 7 of a tensor of this shape.
std::string positionString(const std::vector<int64_t>& shape, int64_t pos) {
  std::string s = "position " + std::to_string(pos);
  if (shape.size() > 1) {
    std::vector<int64_t> idx(shape.size());
    int64_t p = pos;
    for (size_t i = shape.size(); i-- > 0;) {
      int64_t d = shape[i] ? shape[i] : 1;
      idx[i] = p % d;
      p /= d;
    }
    s += " (index " + shapeStr(idx) + ")";
  }
  return s;
}

// Runs an index-checked kernel and throws "op: argument 'name' holds V at position P, outside [0, limit)"
// for the first bad index. On the CPU the indices are checked at once (after the work that writes
// them, if any is queued) and `cpuKernel` (capturing by value) may be queued (deferred.h); CUDA's
// `cudaRun` checks on the device and returns the first bad position or -1, with the value in bad.
template <typename Cpu, typename Cuda>
void checkedRun(Napi::Env env, const char* op, const TensorImpl& idx, const char* name, int64_t limit,
                const int32_t* allowed, const std::string& extra, Cpu cpuKernel, Cuda&& cudaRun) {
  int32_t bad = 0;
  int64_t pos = -1;
  if (idx.device == kCpu) {
    if (pendingOutput(idx)) settle(env, op);
    pos = cpu::firstBadIndex(static_cast<const int32_t*>(idx.ptr()), idx.numel(), limit, allowed, &bad);
  } else {
    runKernel(env, op, [&] { pos = cudaRun(&bad); });
  }
  if (pos >= 0)
    fail(env, op, arg(name) + " holds " + std::to_string(bad) + " at " + positionString(idx.shape, pos) +
                      ", outside [0, " + std::to_string(limit) + ")" + extra);
  if (idx.device == kCpu) deferKernel(env, op, kCpu, cpuKernel);
}

// layerNorm(x, weight, bias, eps, residual|undefined) -> { out, mean, rstd }
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "layerNorm"};
  TensorImpl& x = a.tensor(info[0], "x");
  a.floating(x, "x");
  a.minRank(x, "x", 1, "[..., H]");
  int64_t H = x.shape.back();
  if (H < 1) a.error("argument 'x' must have a last dimension of at least 1, got shape " + x.shapeString());
  TensorImpl& w = a.tensor(info[1], "weight");
  a.shape(w, "weight", {H});
  a.dtype(w, "weight", x.dtype, "x");
  a.device(w, "weight", x, "x");
  TensorImpl& b = a.tensor(info[2], "bias");
  a.shape(b, "bias", {H});
  a.dtype(b, "bias", x.dtype, "x");
  a.device(b, "bias", x, "x");
  double eps = info[3].IsUndefined() ? 1e-12 : a.number(info[3], "eps");
  if (eps <= 0) a.error("argument 'eps' must be positive, got " + num(eps));
  const void* res = nullptr;
  if (!absent(info[4])) {
    TensorImpl& r = a.tensor(info[4], "residual");
    a.like(r, "residual", x, "x");
    res = r.ptr();
  }
  std::vector<int64_t> rowShape = leading(x);
  size_t rows = product(rowShape);
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, a.op);
  Napi::Object mean = newTensor(env, rowShape, DType::F32, x.device, a.op);
  Napi::Object rstd = newTensor(env, rowShape, DType::F32, x.device, a.op);
  float* mp = static_cast<float*>(implOf(mean).ptr());
  float* rp = static_cast<float*>(implOf(rstd).ptr());
  void* o = implOf(out).ptr();
  deferKernel(env, a.op, x.device, [=] {
    FA_NN_DISPATCH(x.device, layerNorm, x.dtype, x.ptr(), res, w.ptr(), b.ptr(), o, mp, rp, rows, size_t(H),
                   float(eps));
  });
  Napi::Object result = Napi::Object::New(env);
  result.Set("out", out);
  result.Set("mean", mean);
  result.Set("rstd", rstd);
  return result;
}

// layerNormBackward(dOut, x, residual|undefined, weight, mean, rstd) -> { dx, dWeight, dBias }
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "layerNormBackward"};
  TensorImpl& dOut = a.tensor(info[0], "dOut");
  TensorImpl& x = a.tensor(info[1], "x");
  a.floating(x, "x");
  a.minRank(x, "x", 1, "[..., H]");
  int64_t H = x.shape.back();
  if (H < 1) a.error("argument 'x' must have a last dimension of at least 1, got shape " + x.shapeString());
  a.like(dOut, "dOut", x, "x");
  const void* res = nullptr;
  if (!absent(info[2])) {
    TensorImpl& r = a.tensor(info[2], "residual");
    a.like(r, "residual", x, "x");
    res = r.ptr();
  }
  TensorImpl& w = a.tensor(info[3], "weight");
  a.shape(w, "weight", {H});
  a.dtype(w, "weight", x.dtype, "x");
  a.device(w, "weight", x, "x");
  std::vector<int64_t> rowShape = leading(x);
  TensorImpl& mean = a.tensor(info[4], "mean");
  TensorImpl& rstd = a.tensor(info[5], "rstd");
  auto stat = [&](const TensorImpl& t, const char* name) {
    if (t.dtype != DType::F32) a.error(arg(name) + " must be float32 (from layerNorm), got " + dtypeName(t.dtype));
    a.shape(t, name, rowShape);
    a.device(t, name, x, "x");
  };
  stat(mean, "mean");
  stat(rstd, "rstd");
  size_t rows = product(rowShape);
  Napi::Object dx = newTensor(env, x.shape, x.dtype, x.device, a.op);
  Napi::Object dW = newTensor(env, {H}, DType::F32, x.device, a.op);
  Napi::Object dB = newTensor(env, {H}, DType::F32, x.device, a.op);
  void* dxp = implOf(dx).ptr();
  float* dWp = static_cast<float*>(implOf(dW).ptr());
  float* dBp = static_cast<float*>(implOf(dB).ptr());
  const float* mp = static_cast<const float*>(mean.ptr());
  const float* rp = static_cast<const float*>(rstd.ptr());
  deferKernel(env, a.op, x.device, [=] {
    FA_NN_DISPATCH(x.device, layerNormBackward, x.dtype, dOut.ptr(), x.ptr(), res, w.ptr(), mp, rp, dxp, dWp, dBp,
                   rows, size_t(H));
  });
  Napi::Object result = Napi::Object::New(env);
  result.Set("dx", dx);
  result.Set("dWeight", dW);
  result.Set("dBias", dB);
  return result;
}

// maskedSoftmax(scores, scale|undefined, keyMask|undefined, causal|undefined) -> probs
Napi::Value MaskedSoftmax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "maskedSoftmax"};
  TensorImpl& s = a.tensor(info[0], "scores");
  a.floating(s, "scores");
  a.minRank(s, "scores", 1, "[B, NH, Tq, Tk] (or [..., Tk] without keyMask)");
  float scale = info[1].IsUndefined() ? 1.0f : float(a.number(info[1], "scale"));
  size_t Tk = size_t(s.shape.back());
  size_t rows = product(leading(s));
  const void* mask = nullptr;
  DType maskType = DType::F32;
  size_t rowsPerBatch = 1;
  if (!absent(info[2])) {
    TensorImpl& m = a.tensor(info[2], "keyMask");
    if (s.shape.size() != 4)
      a.error("argument 'scores' must be [B, NH, Tq, Tk] when a keyMask is given, got shape " + s.shapeString());
    a.shape(m, "keyMask", {s.shape[0], s.shape[3]});
    a.device(m, "keyMask", s, "scores");
    mask = m.ptr();
    maskType = m.dtype;
    rowsPerBatch = size_t(s.shape[1]) * size_t(s.shape[2]);
  }
  size_t causalTq = 0;
  if (!absent(info[3]) && info[3].ToBoolean().Value()) {
    if (s.shape.size() < 2) a.error("argument 'scores' must be [..., Tq, Tk] for causal attention, got shape " + s.shapeString());
    causalTq = size_t(s.shape[s.shape.size() - 2]);
    if (causalTq > Tk)
      a.error("causal attention needs Tq <= Tk (queries are the last Tq of the keys), got shape " + s.shapeString());
  }
  Napi::Object out = newTensor(env, s.shape, s.dtype, s.device, a.op);
  void* o = implOf(out).ptr();
  deferKernel(env, a.op, s.device, [=] {
    FA_NN_DISPATCH(s.device, maskedSoftmax, s.dtype, s.ptr(), mask, maskType, o, rows, Tk, rowsPerBatch, scale,
                   causalTq);
  });
  return out;
}

// maskedSoftmaxBackward(probs, dProbs, scale|undefined) -> dScores
Napi::Value MaskedSoftmaxBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "maskedSoftmaxBackward"};
  TensorImpl& p = a.tensor(info[0], "probs");
  a.floating(p, "probs");
  a.minRank(p, "probs", 1, "[..., Tk]");
  TensorImpl& d = a.tensor(info[1], "dProbs");
  a.like(d, "dProbs", p, "probs");
  float scale = info[2].IsUndefined() ? 1.0f : float(a.number(info[2], "scale"));
  size_t Tk = size_t(p.shape.back());
  size_t rows = product(leading(p));
  Napi::Object out = newTensor(env, p.shape, p.dtype, p.device, a.op);
  void* o = implOf(out).ptr();
  deferKernel(env, a.op, p.device, [=] {
    FA_NN_DISPATCH(p.device, maskedSoftmaxBackward, p.dtype, p.ptr(), d.ptr(), o, rows, Tk, scale);
  });
  return out;
}

// transpose12(x [A, B, C, D]) -> [A, C, B, D]
Napi::Value Transpose12(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "transpose12"};
  TensorImpl& x = a.tensor(info[0], "x");
  if (x.shape.size() != 4) a.error("argument 'x' must be 4-D [A, B, C, D], got shape " + x.shapeString());
  const auto& s = x.shape;
  Napi::Object out = newTensor(env, {s[0], s[2], s[1], s[3]}, x.dtype, x.device, a.op);
  void* o = implOf(out).ptr();
  deferKernel(env, a.op, x.device, [=] {
    FA_NN_DISPATCH(x.device, transpose12, dtypeSize(x.dtype), x.ptr(), o, size_t(s[0]), size_t(s[1]), size_t(s[2]),
                   size_t(s[3]));
  });
  return out;
}

// embedding(table [V, H], ids int32 [...]) -> [..., H]
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "embedding"};
  TensorImpl& table = a.tensor(info[0], "table");
  a.floating(table, "table");
  if (table.shape.size() != 2) a.error("argument 'table' must be 2-D [V, H], got shape " + table.shapeString());
  TensorImpl& ids = a.tensor(info[1], "ids");
  a.int32(ids, "ids");
  a.device(ids, "ids", table, "table");
  int64_t V = table.shape[0], H = table.shape[1];
  std::vector<int64_t> shape = ids.shape;
  shape.push_back(H);
  size_t N = ids.numel();
  Napi::Object out = newTensor(env, shape, table.dtype, table.device, a.op);
  void* o = implOf(out).ptr();
  const int32_t* ip = static_cast<const int32_t*>(ids.ptr());
  checkedRun(env, a.op, ids, "ids", V, nullptr, "", [=] { cpu::embedding(table.dtype, table.ptr(), ip, o, N, size_t(H)); },
             [&](int32_t* bad) -> int64_t {
#ifdef FA_WITH_CUDA
               return cuda::embedding(table.device, table.dtype, table.ptr(), ip, o, N, size_t(H), size_t(V), bad);
#else
               (void)bad;
               return -1;
#endif
             });
  return out;
}

// embeddingBackward(dOut [..., H], ids int32 [...], numEmbeddings) -> dTable fp32 [V, H]
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "embeddingBackward"};
  TensorImpl& dOut = a.tensor(info[0], "dOut");
  a.floating(dOut, "dOut");
  a.minRank(dOut, "dOut", 1, "[..., H]");
  TensorImpl& ids = a.tensor(info[1], "ids");
  a.int32(ids, "ids");
  a.device(ids, "ids", dOut, "dOut");
  if (ids.shape != leading(dOut))
    a.error("argument 'ids' has shape " + ids.shapeString() + " but 'dOut' " + dOut.shapeString() + " needs " +
            shapeStr(leading(dOut)));
  int64_t V = int64_t(a.integer(info[2], "numEmbeddings", 1, 2147483647.0));
  int64_t H = dOut.shape.back();
  size_t N = ids.numel();
  Napi::Object out = newTensor(env, {V, H}, DType::F32, dOut.device, a.op);
  float* o = static_cast<float*>(implOf(out).ptr());
  const int32_t* ip = static_cast<const int32_t*>(ids.ptr());
  checkedRun(env, a.op, ids, "ids", V, nullptr, "",
             [=] { cpu::embeddingBackward(dOut.dtype, dOut.ptr(), ip, o, N, size_t(H), size_t(V)); },
             [&](int32_t* bad) -> int64_t {
#ifdef FA_WITH_CUDA
               return cuda::embeddingBackward(dOut.device, dOut.dtype, dOut.ptr(), ip, o, N, size_t(H), size_t(V), bad);
#else
               (void)bad;
               return -1;
#endif
             });
  return out;
}

// dropout(x, p, seed) / dropoutBackward(dOut, p, seed): the same Philox mask.
Napi::Value DropoutImpl(const Napi::CallbackInfo& info, const char* opName, const char* xName) {
  Napi::Env env = info.Env();
  Args a{env, opName};
  TensorImpl& x = a.tensor(info[0], xName);
  a.floating(x, xName);
  float p = a.probability(info[1], "p");
  uint64_t seed = a.seed(info[2]);
  Napi::Object out = newTensor(env, x.shape, x.dtype, x.device, a.op);
  void* o = implOf(out).ptr();
  deferKernel(env, a.op, x.device, [=] { FA_NN_DISPATCH(x.device, dropout, x.dtype, x.ptr(), o, x.numel(), p, seed); });
  return out;
}
Napi::Value Dropout(const Napi::CallbackInfo& info) { return DropoutImpl(info, "dropout", "x"); }
Napi::Value DropoutBackward(const Napi::CallbackInfo& info) { return DropoutImpl(info, "dropoutBackward", "dOut"); }

// softmaxCrossEntropy(logits [B, C], labels int32 [B], ignoreIndex|undefined) -> { loss fp32 [1], dLogits }
Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "softmaxCrossEntropy"};
  TensorImpl& logits = a.tensor(info[0], "logits");
  a.floating(logits, "logits");
  if (logits.shape.size() != 2) a.error("argument 'logits' must be 2-D [B, C], got shape " + logits.shapeString());
  TensorImpl& labels = a.tensor(info[1], "labels");
  a.int32(labels, "labels");
  a.device(labels, "labels", logits, "logits");
  a.shape(labels, "labels", {logits.shape[0]});
  int32_t ignore = info[2].IsUndefined() ? -100
                                         : int32_t(a.integer(info[2], "ignoreIndex", -2147483648.0, 2147483647.0));
  size_t rows = size_t(logits.shape[0]), C = size_t(logits.shape[1]);
  Napi::Object loss = newTensor(env, {1}, DType::F32, logits.device, a.op);
  Napi::Object dLogits = newTensor(env, logits.shape, logits.dtype, logits.device, a.op);
  float* lp = static_cast<float*>(implOf(loss).ptr());
  void* dp = implOf(dLogits).ptr();
  const int32_t* ip = static_cast<const int32_t*>(labels.ptr());
  checkedRun(env, a.op, labels, "labels", int64_t(C), &ignore, " and not ignoreIndex " + std::to_string(ignore),
             [=] { cpu::softmaxCrossEntropy(logits.dtype, logits.ptr(), ip, lp, dp, rows, C, ignore); },
             [&](int32_t* bad) -> int64_t {
#ifdef FA_WITH_CUDA
               return cuda::softmaxCrossEntropy(logits.device, logits.dtype, logits.ptr(), ip, lp, dp, rows, C, ignore,
                                                bad);
#else
               (void)bad;
               return -1;
#endif
             });

  Napi::Object result = Napi::Object::New(env);
  result.Set("loss", loss);
  result.Set("dLogits", dLogits);
  return result;
}

}  // namespace

void registerNnOps(Napi::Env env, Napi::Object exports) {
  exports.Set("layerNorm", Napi::Function::New(env, LayerNorm, "layerNorm"));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward, "layerNormBackward"));
  exports.Set("maskedSoftmax", Napi::Function::New(env, MaskedSoftmax, "maskedSoftmax"));
  exports.Set("maskedSoftmaxBackward", Napi::Function::New(env, MaskedSoftmaxBackward, "maskedSoftmaxBackward"));
  exports.Set("transpose12", Napi::Function::New(env, Transpose12, "transpose12"));
  exports.Set("embedding", Napi::Function::New(env, Embedding, "embedding"));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward, "embeddingBackward"));
  exports.Set("dropout", Napi::Function::New(env, Dropout, "dropout"));
  exports.Set("dropoutBackward", Napi::Function::New(env, DropoutBackward, "dropoutBackward"));
  exports.Set("softmaxCrossEntropy", Napi::Function::New(env, SoftmaxCrossEntropy, "softmaxCrossEntropy"));
}

}  // namespace fa
