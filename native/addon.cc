// Module init: registers the tensor class, the module functions and the ops.
#include <napi.h>

#include "host_cache.h"
#include "cpu/basic.h"
#include "cpu/blas.h"
#include "cpu/parallel.h"
#include "ops.h"
#include "tensor.h"
#ifdef FA_WITH_CUDA
#include "../cuda/allocator.h"
#include "../cuda/runtime.h"
#endif

#ifndef FA_VERSION
#define FA_VERSION "0.0.0"
#endif

namespace fa {
namespace {

int argDevice(Napi::Env env, Napi::Value v, const char* op) {
  if (!v.IsNumber()) fail(env, op, "argument 'device' must be a device index");
  return v.As<Napi::Number>().Int32Value();
}

// fromArray(values: Float32Array | Int32Array, shape, dtype, device)
Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "tensor";
  if (!info[0].IsTypedArray()) fail(env, op, "argument 'data' must be a typed array");
  std::vector<int64_t> shape = argShape(env, info[1], op, "shape");
  DType dtype = argDType(env, info[2], op, "dtype");
  int device = argDevice(env, info[3], op);
  // filled here, at once: a fresh buffer waits for no queued work (deferred.h), and an index check
  // may read it while a pass is being queued
  Napi::Object out = newTensor(env, shape, dtype, device, op, true);
  TensorImpl& t = implOf(out);
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  if (ta.ElementLength() != t.numel())
    fail(env, op, "argument 'data' has " + std::to_string(ta.ElementLength()) + " elements but shape " +
                      t.shapeString() + " needs " + std::to_string(t.numel()));
  TensorImpl host = stageTypedArray(env, t, info[0], op);
  try {
    copyConvert(host, t, op);
  } catch (const std::exception& e) {
    fail(env, op, e.what());
  }
  return out;
}

// empty(shape, dtype, device): uninitialised storage
Napi::Value Empty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = argShape(env, info[0], "empty", "shape");
  DType dtype = argDType(env, info[1], "empty", "dtype");
  return newTensor(env, shape, dtype, argDevice(env, info[2], "empty"), "empty");
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", FA_VERSION);
  o.Set("napi", NAPI_VERSION);
  const char* blas = cpu::blasName();
  o.Set("blas", blas ? Napi::Value(Napi::String::New(env, blas)) : env.Null());
  const cpu::HostBlas& hb = cpu::hostBlas();
  o.Set("blasLibrary", hb.sgemm ? Napi::Value(Napi::String::New(env, hb.file)) : env.Null());
  o.Set("blasVersion", hb.sgemm && !hb.version.empty() ? Napi::Value(Napi::String::New(env, hb.version)) : env.Null());
  o.Set("cpuThreads", cpu::threadCount());
#ifdef FA_WITH_CUDA
  const cuda::Probe& p = cuda::probe();
  o.Set("cudaCompiled", true);
  o.Set("cudaUsable", p.usable);
  if (!p.usable) o.Set("cudaReason", p.reason);
  if (!p.cublas.empty()) o.Set("cublas", p.cublas);
  o.Set("cudaArchitectures", FA_CUDA_ARCHS);
#else
  o.Set("cudaCompiled", false);
  o.Set("cudaUsable", false);
  o.Set("cudaReason", "this build was compiled without CUDA");
#endif
  return o;
}

Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env);
  Napi::Object cpuDev = Napi::Object::New(env);
  cpuDev.Set("id", "cpu");
  cpuDev.Set("kind", "cpu");
  cpuDev.Set("name", "CPU (" + std::to_string(cpu::threadCount()) + " threads)");
  a.Set(0u, cpuDev);
#ifdef FA_WITH_CUDA
  const cuda::Probe& p = cuda::probe();
  if (p.usable) {
    for (int i = 0; i < p.deviceCount; i++) {
      cuda::DeviceInfo d;
      runKernel(env, "devices", [&] { d = cuda::deviceInfo(i); });
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", "cuda:" + std::to_string(i));
      o.Set("kind", "cuda");
      o.Set("name", d.name);
      o.Set("memoryBytes", double(d.memoryBytes));
      o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
      a.Set(uint32_t(i + 1), o);
    }
  }
#endif
  return a;
}

Napi::Value limitValue(Napi::Env env, uint64_t limit) {
  return limit == kNoLimit ? env.Null() : Napi::Value(Napi::Number::New(env, double(limit)));
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = argDevice(env, info[0], "memoryStats");
  flushExternal(env);
  MemStats s = memStats(device);
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocatedBytes", double(s.allocatedBytes));
  o.Set("reservedBytes", double(s.reservedBytes));
  o.Set("liveTensors", double(s.liveTensors));
  o.Set("limitBytes", limitValue(env, s.limitBytes));
  return o;
}

// releaseCachedMemory(): the host buffer cache (and each CUDA device's allocator cache) back to the system.
Napi::Value ReleaseCachedMemory(const Napi::CallbackInfo& info) {
  hostReleaseCache();
#ifdef FA_WITH_CUDA
  const cuda::Probe& p = cuda::probe();
  if (p.usable)
    for (int d = 0; d < p.deviceCount; d++) cuda::emptyCache(d);
#endif
  return info.Env().Undefined();
}

// A limit argument: a byte count, null (no limit) or undefined (keep `current`).
uint64_t argLimit(Napi::Env env, Napi::Value v, uint64_t current, const char* op, const char* name) {
  if (v.IsUndefined()) return current;
  if (v.IsNull()) return kNoLimit;
  double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(x >= 0) || x != double(int64_t(x)) || x > 9.0e18)
    fail(env, op, std::string("argument '") + name + "' must be a non-negative whole number of bytes or null");
  return uint64_t(x);
}

Napi::Value budgetObject(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("host", limitValue(env, hostMemoryLimit()));
  o.Set("device", limitValue(env, deviceMemoryLimit()));
  return o;
}

// setMemoryBudget(host, device) -> { host, device }: byte counts, null for none, undefined to keep.
Napi::Value SetMemoryBudget(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t host = argLimit(env, info[0], hostMemoryLimit(), "setMemoryBudget", "host");
  uint64_t device = argLimit(env, info[1], deviceMemoryLimit(), "setMemoryBudget", "device");
  setMemoryBudget(host, device);
  return budgetObject(env);
}

// applyEnvMemoryBudget(host, device) -> whether applied: the environment's limits, once per process.
Napi::Value ApplyEnvMemoryBudget(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t host = argLimit(env, info[0], kNoLimit, "applyEnvMemoryBudget", "host");
  uint64_t device = argLimit(env, info[1], kNoLimit, "applyEnvMemoryBudget", "device");
  return Napi::Boolean::New(env, applyEnvMemoryBudget(host, device));
}

// externalMemory() -> { reportedBytes, pendingBytes }: this thread's tensor storage as V8 sees it (tests).
Napi::Value ExternalMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  flushExternal(env);
  ExternalAccount& a = *env.GetInstanceData<AddonData>()->external;
  Napi::Object o = Napi::Object::New(env);
  o.Set("reportedBytes", double(a.reported.load()));
  o.Set("pendingBytes", double(a.pending.load()));
  return o;
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = argDevice(env, info[0], "synchronize");
  checkDevice(env, device, "synchronize");
#ifdef FA_WITH_CUDA
  if (device != kCpu) runKernel(env, "synchronize", [&] { cuda::synchronize(device, "synchronize"); });
#endif
  return env.Undefined();
}

// timerStart(device) / timerStop(device) -> ms: CUDA events on the device's stream.
Napi::Value TimerStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = argDevice(env, info[0], "timerStart");
  checkDevice(env, device, "timerStart");
  if (device == kCpu) fail(env, "timerStart", "CUDA event timers need a CUDA device");
#ifdef FA_WITH_CUDA
  runKernel(env, "timerStart", [&] { cuda::timerStart(device); });
#endif
  return env.Undefined();
}

Napi::Value TimerStop(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = argDevice(env, info[0], "timerStop");
  checkDevice(env, device, "timerStop");
  if (device == kCpu) fail(env, "timerStop", "CUDA event timers need a CUDA device");
  float ms = 0;
#ifdef FA_WITH_CUDA
  runKernel(env, "timerStop", [&] { ms = cuda::timerStop(device); });
#endif
  return Napi::Number::New(env, ms);
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function ctor = TensorWrap::define(env);
  data->tensorCtor = Napi::Persistent(ctor);
  env.SetInstanceData<AddonData>(data);
  exports.Set("NativeTensor", ctor);
  exports.Set("fromArray", Napi::Function::New(env, FromArray, "fromArray"));
  exports.Set("empty", Napi::Function::New(env, Empty, "empty"));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
  exports.Set("devices", Napi::Function::New(env, Devices, "devices"));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats, "memoryStats"));
  exports.Set("releaseCachedMemory", Napi::Function::New(env, ReleaseCachedMemory, "releaseCachedMemory"));
  exports.Set("setMemoryBudget", Napi::Function::New(env, SetMemoryBudget, "setMemoryBudget"));
  exports.Set("applyEnvMemoryBudget", Napi::Function::New(env, ApplyEnvMemoryBudget, "applyEnvMemoryBudget"));
  exports.Set("externalMemory", Napi::Function::New(env, ExternalMemory, "externalMemory"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
  exports.Set("timerStart", Napi::Function::New(env, TimerStart, "timerStart"));
  exports.Set("timerStop", Napi::Function::New(env, TimerStop, "timerStop"));
  registerBasicOps(env, exports);
  registerAdapterOps(env, exports);
  registerNnOps(env, exports);
  registerOptimOps(env, exports);
  registerDecoderOps(env, exports);
  registerGenerationOps(env, exports);
  registerDeferredOps(env, exports);
  registerFusionOps(env, exports);
  return exports;
}

}  // namespace fa

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return fa::Init(env, exports); }
NODE_API_MODULE(fused_adapters, InitModule)
