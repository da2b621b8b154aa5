// Bindings for the generation kernels: the paged KV-cache write, decode attention over the paged
// cache and the sampler (contracts in native/generation.h). On the CPU the page ids, lengths and
// slots are checked here; on CUDA they stay on the device and the kernels skip what is out of range.
#include <algorithm>

#include "args.h"
#include "cpu/generation.h"
#include "cpu/parallel.h"
#include "ops.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/generation.h"
#endif

namespace fa {

namespace {

// cacheScatter(pool [S, ...], src [N, ...], slots int32 [N]): pool row slots[i] = src row i (−1: skipped), in place.
Napi::Value CacheScatter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "cacheScatter"};
  TensorImpl& pool = a.tensor(info[0], "pool");
  TensorImpl& src = a.tensor(info[1], "src");
  TensorImpl& slots = a.tensor(info[2], "slots");
  a.minRank(pool, "pool", 1, "[slots, ...]");
  if (src.shape.size() != pool.shape.size() || !std::equal(src.shape.begin() + 1, src.shape.end(), pool.shape.begin() + 1))
    a.error("argument 'src' has shape " + src.shapeString() + ", whose rows do not fit 'pool' " + pool.shapeString());
  a.dtype(src, "src", pool.dtype, "pool");
  a.device(src, "src", pool, "pool");
  a.int32(slots, "slots");
  a.shape(slots, "slots", {src.shape[0]});
  a.device(slots, "slots", pool, "pool");
  const size_t N = size_t(src.shape[0]), S = size_t(pool.shape[0]);
  const int32_t* sp = static_cast<const int32_t*>(slots.ptr());
  if (pool.device == kCpu)
    for (size_t i = 0; i < N; i++)
      if (sp[i] < -1 || sp[i] >= int64_t(S))
        a.error("slot " + std::to_string(sp[i]) + " (row " + std::to_string(i) + ") is outside the pool of " + std::to_string(S) + " rows");
  const size_t rowBytes = (S ? pool.numel() / S : 0) * dtypeSize(pool.dtype);
  deferKernel(env, a.op, pool.device, [=] { FA_NN_DISPATCH(pool.device, cacheScatter, pool.ptr(), S, src.ptr(), sp, N, rowBytes); });
  return env.Undefined();
}

// decodeAttention(q [B, Hq, D], kPool [S, Hkv, D], vPool, pageTable int32 [B, maxPages], seqLens int32 [B],
//                 pageSize, maxLength, scale|undefined, splits|undefined) -> out [B, Hq, D]
Napi::Value DecodeAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "decodeAttention"};
  TensorImpl& q = a.tensor(info[0], "q");
  TensorImpl& k = a.tensor(info[1], "kPool");
  TensorImpl& v = a.tensor(info[2], "vPool");
  TensorImpl& table = a.tensor(info[3], "pageTable");
  TensorImpl& lens = a.tensor(info[4], "seqLens");
  a.floating(q, "q");
  if (q.shape.size() != 3) a.error("argument 'q' must be [B, heads, D], got shape " + q.shapeString());
  if (k.shape.size() != 3) a.error("argument 'kPool' must be [slots, kvHeads, D], got shape " + k.shapeString());
  a.dtype(k, "kPool", q.dtype, "q");
  a.device(k, "kPool", q, "q");
  a.like(v, "vPool", k, "kPool");
  if (k.shape[2] != q.shape[2]) a.error("argument 'kPool' has head size " + std::to_string(k.shape[2]) + ", 'q' " + std::to_string(q.shape[2]));
  if (k.shape[1] < 1 || q.shape[1] % k.shape[1])
    a.error("the query heads (" + std::to_string(q.shape[1]) + ") must be a multiple of the key/value heads (" + std::to_string(k.shape[1]) + ")");
  a.int32(table, "pageTable");
  if (table.shape.size() != 2 || table.shape[0] != q.shape[0])
    a.error("argument 'pageTable' must be [B, maxPages] with B = " + std::to_string(q.shape[0]) + ", got shape " + table.shapeString());
  a.device(table, "pageTable", q, "q");
  a.int32(lens, "seqLens");
  a.shape(lens, "seqLens", {q.shape[0]});
  a.device(lens, "seqLens", q, "q");
  DecodeShape s{size_t(q.shape[0]), size_t(q.shape[1]), size_t(k.shape[1]), size_t(q.shape[2]), 0, size_t(table.shape[1]),
                size_t(k.shape[0]), 1.0f, 1};
  s.pageSize = size_t(a.integer(info[5], "pageSize", 1, 1 << 20));
  if (s.slots % s.pageSize) a.error("the pools' " + std::to_string(s.slots) + " rows are not a whole number of pages of " + std::to_string(s.pageSize));
  size_t maxLength = size_t(a.integer(info[6], "maxLength", 0, double(s.maxPages * s.pageSize)));
  s.scale = absent(info[7]) ? float(1.0 / std::sqrt(double(s.D))) : float(a.number(info[7], "scale"));
  size_t splits = absent(info[8]) ? 0 : size_t(a.integer(info[8], "splits", 0, 4096));
  if (q.device == kCpu) {
    const int32_t* lp = static_cast<const int32_t*>(lens.ptr());
    const int32_t* tp = static_cast<const int32_t*>(table.ptr());
    for (size_t b = 0; b < s.B; b++) {
      if (lp[b] < 0 || size_t(lp[b]) > maxLength)
        a.error("seqLens[" + std::to_string(b) + "] = " + std::to_string(lp[b]) + " is outside [0, maxLength = " + std::to_string(maxLength) + "]");
      for (size_t p = 0; p * s.pageSize < size_t(lp[b]); p++)
        if (tp[b * s.maxPages + p] < 0 || size_t(tp[b * s.maxPages + p]) >= s.pages())
          a.error("page " + std::to_string(tp[b * s.maxPages + p]) + " (sequence " + std::to_string(b) + ", entry " + std::to_string(p) +
                  ") is outside the pool's " + std::to_string(s.pages()) + " pages");
    }
    if (!splits) {  // enough tasks for every core, each with at least 512 keys
      size_t tasks = s.B * s.Hkv, want = (2 * size_t(cpu::threadCount()) + tasks - 1) / tasks, most = (maxLength + 511) / 512;
      splits = std::max<size_t>(1, std::min(want, most));
    }
  }
#ifdef FA_WITH_CUDA
  else {
    if (s.D > cuda::kDecodeMaxD) a.error("head size " + std::to_string(s.D) + " exceeds the CUDA kernel's " + std::to_string(cuda::kDecodeMaxD));
    if (!splits) splits = cuda::decodeSplits(q.device, s.B, s.Hq, maxLength);
  }
#endif
  s.splits = splits;
  Napi::Object out = newTensor(env, q.shape, q.dtype, q.device, a.op);
  void* o = implOf(out).ptr();
  deferKernel(env, a.op, q.device, [=] {
    FA_NN_DISPATCH(q.device, decodeAttention, q.dtype, q.ptr(), k.ptr(), v.ptr(), static_cast<const int32_t*>(table.ptr()),
                   static_cast<const int32_t*>(lens.ptr()), o, s);
  });
  return out;
}

// sampleTokens(logits [B, V], params fp32 [B, 5], penaltyIds int32 [B, P] | null) -> tokens int32 [B]
Napi::Value SampleTokens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a{env, "sampleTokens"};
  TensorImpl& logits = a.tensor(info[0], "logits");
  a.floating(logits, "logits");
  if (logits.shape.size() != 2 || logits.shape[1] < 1) a.error("argument 'logits' must be [B, vocab], got shape " + logits.shapeString());
  TensorImpl& params = a.tensor(info[1], "params");
  if (params.dtype != DType::F32) a.error("argument 'params' must be float32, got " + std::string(dtypeName(params.dtype)));
  a.shape(params, "params", {logits.shape[0], int64_t(kSampleParams)});
  a.device(params, "params", logits, "logits");
  const int32_t* pen = nullptr;
  size_t P = 0;
  if (!absent(info[2])) {
    TensorImpl& ids = a.tensor(info[2], "penaltyIds");
    a.int32(ids, "penaltyIds");
    if (ids.shape.size() != 2 || ids.shape[0] != logits.shape[0])
      a.error("argument 'penaltyIds' must be [B, n] with B = " + std::to_string(logits.shape[0]) + ", got shape " + ids.shapeString());
    a.device(ids, "penaltyIds", logits, "logits");
    pen = static_cast<const int32_t*>(ids.ptr());
    P = size_t(ids.shape[1]);
  }
  const size_t B = size_t(logits.shape[0]), V = size_t(logits.shape[1]);
  if (V > size_t(INT32_MAX)) a.error("a vocabulary of " + std::to_string(V) + " tokens does not fit int32 ids");
  Napi::Object out = newTensor(env, {int64_t(B)}, DType::I32, logits.device, a.op);
  int32_t* tp = static_cast<int32_t*>(implOf(out).ptr());
  const float* pp = static_cast<const float*>(params.ptr());
  deferKernel(env, a.op, logits.device, [=] { FA_NN_DISPATCH(logits.device, sampleTokens, logits.dtype, logits.ptr(), pp, pen, P, tp, B, V); });
  return out;
}

}  // namespace

void registerGenerationOps(Napi::Env env, Napi::Object exports) {
  exports.Set("cacheScatter", Napi::Function::New(env, CacheScatter, "cacheScatter"));
  exports.Set("decodeAttention", Napi::Function::New(env, DecodeAttention, "decodeAttention"));
  exports.Set("sampleTokens", Napi::Function::New(env, SampleTokens, "sampleTokens"));
}

}  // namespace fa
