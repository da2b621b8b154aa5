#include "tensor.h"

#include <cstring>
#include <stdexcept>

#include "cpu/basic.h"
#include "deferred.h"
#ifdef FA_WITH_CUDA
#include "../cuda/basic.h"
#include "../cuda/runtime.h"
#endif

namespace fa {

std::string TensorImpl::shapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void fail(Napi::Env env, const std::string& op, const std::string& msg) {
  throw Napi::Error::New(env, op + ": " + msg);
}

bool isTensor(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return false;
  auto* data = env.GetInstanceData<AddonData>();
  return v.As<Napi::Object>().InstanceOf(data->tensorCtor.Value());
}

TensorImpl& argTensor(Napi::Env env, Napi::Value v, const char* op, const char* name) {
  if (!isTensor(env, v)) fail(env, op, std::string("argument '") + name + "' must be a Tensor");
  TensorWrap* w = TensorWrap::Unwrap(v.As<Napi::Object>());
  if (w->disposed()) fail(env, op, std::string("argument '") + name + "' is a disposed tensor");
  holdForDeferred(w->impl);
  return w->impl;
}

TensorImpl& implOf(Napi::Object obj) { return TensorWrap::Unwrap(obj)->impl; }

void checkDevice(Napi::Env env, int device, const char* op) {
  if (device == kCpu) return;
  std::string name = "cuda:" + std::to_string(device);
#ifdef FA_WITH_CUDA
  const cuda::Probe& p = cuda::probe();
  if (device < 0) fail(env, op, "invalid device index " + std::to_string(device));
  if (!p.usable) fail(env, op, "device '" + name + "' is not usable: " + p.reason);
  if (device >= p.deviceCount)
    fail(env, op, "device '" + name + "' does not exist (" + std::to_string(p.deviceCount) + " CUDA devices)");
#else
  fail(env, op, "device '" + name + "' is not usable: this build has no CUDA support");
#endif
}

std::vector<int64_t> argShape(Napi::Env env, Napi::Value v, const char* op, const char* name) {
  if (!v.IsArray()) fail(env, op, std::string("argument '") + name + "' must be an array of dimensions");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> shape;
  double total = 1;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value d = a.Get(i);
    double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 0) || x != double(int64_t(x)) || x > 2147483647.0)
      fail(env, op, std::string("argument '") + name + "' has an invalid dimension at index " + std::to_string(i));
    shape.push_back(int64_t(x));
    total *= x;
  }
  if (total > 4.0e12) fail(env, op, std::string("argument '") + name + "' is too large");
  return shape;
}

DType argDType(Napi::Env env, Napi::Value v, const char* op, const char* name) {
  DType t;
  if (!v.IsString() || !parseDType(v.As<Napi::String>().Utf8Value(), &t))
    fail(env, op, std::string("argument '") + name + "' must be 'float32', 'bfloat16', 'float16' or 'int32'");
  return t;
}

void flushExternal(Napi::Env env) {
  auto* data = env.GetInstanceData<AddonData>();
  if (!data) return;
  ExternalAccount& a = *data->external;
  int64_t change = a.pending.exchange(0);
  if (change == 0) return;
  // The C call rather than Napi::MemoryManagement::AdjustExternalMemory, whose failure path
  // aborts the process; on failure the change stays pending for the next call.
  int64_t total = 0;
  if (napi_adjust_external_memory(env, change, &total) == napi_ok) a.reported.fetch_add(change);
  else a.pending.fetch_add(change);
}

Napi::Object newTensor(Napi::Env env, const std::vector<int64_t>& shape, DType dtype, int device, const char* op,
                       bool filledNow) {
  checkDevice(env, device, op);
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Object obj = data->tensorCtor.New({});
  TensorImpl& t = implOf(obj);
  t.shape = shape;
  t.dtype = dtype;
  t.device = device;
  try {
    t.buf = std::make_shared<Buffer>(device, t.bytes(), data->external);
  } catch (const std::exception& e) {
    flushExternal(env);
    fail(env, op, e.what());
  }
  flushExternal(env);  // this allocation, and whatever finalizers or workers freed since the last call
  holdForDeferred(t);
  if (!filledNow) noteDeferredOutput(t);
  return obj;
}

void copyConvert(const TensorImpl& src, const TensorImpl& dst, const char* op) {
  size_t n = src.numel();
  if (src.device == kCpu && dst.device == kCpu) {
    if (src.dtype == dst.dtype) std::memcpy(dst.ptr(), src.ptr(), src.bytes());
    else cpu::cast(src.dtype, src.ptr(), dst.dtype, dst.ptr(), n);
    return;
  }
#ifdef FA_WITH_CUDA
  if (src.device == kCpu) {  // host -> device: convert on the host, then one copy
    if (src.dtype == dst.dtype) {
      cuda::copyHostToDevice(dst.device, dst.ptr(), src.ptr(), src.bytes(), op);
    } else {
      Buffer tmp(kCpu, dst.bytes());
      cpu::cast(src.dtype, src.ptr(), dst.dtype, tmp.ptr(), n);
      cuda::copyHostToDevice(dst.device, dst.ptr(), tmp.ptr(), dst.bytes(), op);
    }
    return;
  }
  if (dst.device == kCpu) {  // device -> host
    if (src.dtype == dst.dtype) {
      cuda::copyDeviceToHost(src.device, dst.ptr(), src.ptr(), src.bytes(), op);
    } else {
      Buffer tmp(kCpu, src.bytes());
      cuda::copyDeviceToHost(src.device, tmp.ptr(), src.ptr(), src.bytes(), op);
      cpu::cast(src.dtype, tmp.ptr(), dst.dtype, dst.ptr(), n);
    }
    return;
  }
  if (src.device == dst.device) {
    if (src.dtype == dst.dtype) cuda::copyDeviceToDevice(src.device, src.ptr(), dst.device, dst.ptr(), src.bytes(), op);
    else cuda::cast(dst.device, src.dtype, src.ptr(), dst.dtype, dst.ptr(), n);
    return;
  }
  Buffer tmp(dst.device, src.bytes());
  cuda::copyDeviceToDevice(src.device, src.ptr(), dst.device, tmp.ptr(), src.bytes(), op);
  if (src.dtype == dst.dtype) cuda::copyDeviceToDevice(dst.device, tmp.ptr(), dst.device, dst.ptr(), src.bytes(), op);
  else cuda::cast(dst.device, src.dtype, tmp.ptr(), dst.dtype, dst.ptr(), n);
  cuda::synchronize(dst.device, op);  // tmp is freed on return
#else
  throw std::runtime_error(std::string(op) + ": this build has no CUDA support");
#endif
}

void readFloat(const TensorImpl& t, float* out, const char* op) {
  size_t n = t.numel();
  if (t.device == kCpu) {
    cpu::toFloat(t.dtype, t.ptr(), out, n);
    return;
  }
#ifdef FA_WITH_CUDA
  if (t.dtype == DType::F32) {
    cuda::copyDeviceToHost(t.device, out, t.ptr(), t.bytes(), op);
  } else {
    Buffer tmp(kCpu, t.bytes());
    cuda::copyDeviceToHost(t.device, tmp.ptr(), t.ptr(), t.bytes(), op);
    cpu::toFloat(t.dtype, tmp.ptr(), out, n);
  }
#else
  (void)op;
#endif
}

// ---- the class ----

Napi::Function TensorWrap::define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {InstanceMethod<&TensorWrap::shape>("shape"), InstanceMethod<&TensorWrap::dtype>("dtype"),
                      InstanceMethod<&TensorWrap::device>("device"),
                      InstanceMethod<&TensorWrap::isDisposed>("isDisposed"),
                      InstanceMethod<&TensorWrap::toArray>("toArray"), InstanceMethod<&TensorWrap::data>("data"),
                      InstanceMethod<&TensorWrap::copyFrom>("copyFrom"), InstanceMethod<&TensorWrap::to>("to"),
                      InstanceMethod<&TensorWrap::reshape>("reshape"),
                      InstanceMethod<&TensorWrap::dispose>("dispose")});
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {}

static TensorImpl& self(TensorWrap* w, Napi::Env env, const char* op) {
  if (w->disposed()) fail(env, op, "the tensor was disposed");
  return w->impl;
}

Napi::Value TensorWrap::shape(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env(), impl.shape.size());
  for (size_t i = 0; i < impl.shape.size(); i++) a.Set(uint32_t(i), Napi::Number::New(info.Env(), double(impl.shape[i])));
  return a;
}
Napi::Value TensorWrap::dtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtypeName(impl.dtype)); }
Napi::Value TensorWrap::device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), impl.deviceString());
}
Napi::Value TensorWrap::isDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed()); }

Napi::Value TensorWrap::toArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorImpl& t = self(this, env, "toArray");
  settle(env, "toArray");  // the work queued or in flight that writes it comes first (deferred.h)
  Napi::Float32Array out = Napi::Float32Array::New(env, t.numel());
  try {
    readFloat(t, out.Data(), "toArray");
  } catch (const std::exception& e) {
    fail(env, "toArray", e.what());
  }
  return out;
}

namespace {
// Reads a tensor off the main thread; resolves with a Float32Array.
class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, TensorImpl t)
      : Napi::AsyncWorker(env, "fused-adapters:read"), t_(std::move(t)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      values_.resize(t_.numel());
      readFloat(t_, values_.data(), "data");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Float32Array out = Napi::Float32Array::New(Env(), values_.size());
    if (!values_.empty()) std::memcpy(out.Data(), values_.data(), values_.size() * 4);
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  TensorImpl t_;  // holds the buffer alive even if the tensor is disposed meanwhile
  std::vector<float> values_;
  Napi::Promise::Deferred deferred_;
};
}  // namespace

Napi::Value TensorWrap::data(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorImpl& t = self(this, env, "data");
  settle(env, "data");
  // Snapshot now (a host memcpy, or a device copy queued on the stream): writes made after
  // data() returns must not show up in the result the worker reads later.
  TensorImpl snap = t;
  try {
    snap.buf = std::make_shared<Buffer>(t.device, t.bytes(), env.GetInstanceData<AddonData>()->external);
    copyConvert(t, snap, "data");
  } catch (const std::exception& e) {
    snap.buf.reset();
    flushExternal(env);
    fail(env, "data", e.what());
  }
  flushExternal(env);
  auto* w = new ReadWorker(env, snap);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

TensorImpl stageTypedArray(Napi::Env env, const TensorImpl& t, Napi::Value v, const char* op) {
  if (!v.IsTypedArray()) fail(env, op, "argument 'src' must be a Tensor or a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  if (ta.ElementLength() != t.numel())
    fail(env, op, "argument 'src' has " + std::to_string(ta.ElementLength()) + " elements, the tensor has " +
                      std::to_string(t.numel()));
  TensorImpl host;
  host.shape = t.shape;
  host.device = kCpu;
  switch (ta.TypedArrayType()) {
    case napi_float32_array: host.dtype = DType::F32; break;
    case napi_int32_array: host.dtype = DType::I32; break;
    default: fail(env, op, "argument 'src' must be a Float32Array or Int32Array");
  }
  const char* base = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  host.buf = std::make_shared<Buffer>(kCpu, t.numel() * 4);
  std::memcpy(host.buf->ptr(), base, t.numel() * 4);
  return host;
}

// copyFrom(src): src is a typed array (any numeric kind) or a tensor; same element count.
Napi::Value TensorWrap::copyFrom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorImpl& t = self(this, env, "copyFrom");
  Napi::Value v = info[0];
  // in issue order (deferred.h): queued while deferring on the host, else after the work before it
  auto copy = [&](const TensorImpl& src, const TensorImpl& dst) {
    if (src.device == kCpu && dst.device == kCpu && deferring()) {
      enqueueDeferred("copyFrom", [src, dst] { copyConvert(src, dst, "copyFrom"); });
      return;
    }
    settle(env, "copyFrom");
    copyConvert(src, dst, "copyFrom");
  };
  try {
    if (isTensor(env, v)) {
      TensorImpl& s = argTensor(env, v, "copyFrom", "src");
      if (s.numel() != t.numel())
        fail(env, "copyFrom", "argument 'src' has " + std::to_string(s.numel()) + " elements, the tensor has " +
                                  std::to_string(t.numel()));
      if (&s != &t) copy(s, t);
      return env.Undefined();
    }
    copy(stageTypedArray(env, t, v, "copyFrom"), t);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(env, "copyFrom", e.what());
  }
  return env.Undefined();
}

// to(device, dtype) -> a new tensor (always a copy)
Napi::Value TensorWrap::to(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorImpl& t = self(this, env, "to");
  if (!info[0].IsNumber()) fail(env, "to", "argument 'device' must be a device index");
  int device = info[0].As<Napi::Number>().Int32Value();
  DType dtype = argDType(env, info[1], "to", "dtype");
  if ((dtype == DType::I32) != (t.dtype == DType::I32))
    fail(env, "to", std::string("cannot convert ") + dtypeName(t.dtype) + " to " + dtypeName(dtype));
  Napi::Object out = newTensor(env, t.shape, dtype, device, "to");
  if (t.device == kCpu && device == kCpu && deferring()) {  // a host copy or cast: queued like a kernel
    enqueueDeferred("to", [src = t, dst = implOf(out)] { copyConvert(src, dst, "to"); });
    return out;
  }
  settle(env, "to");
  try {
    copyConvert(t, implOf(out), "to");
  } catch (const std::exception& e) {
    fail(env, "to", e.what());
  }
  return out;
}

// reshape(shape) -> a tensor sharing this one's storage (same element count)
Napi::Value TensorWrap::reshape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorImpl& t = self(this, env, "reshape");
  std::vector<int64_t> shape = argShape(env, info[0], "reshape", "shape");
  size_t n = 1;
  for (int64_t s : shape) n *= size_t(s);
  if (n != t.numel())
    fail(env, "reshape", "cannot view " + t.shapeString() + " (" + std::to_string(t.numel()) + " elements) as " +
                             std::to_string(n) + " elements");
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Object obj = data->tensorCtor.New({});
  TensorImpl& v = implOf(obj);
  v = t;
  v.shape = shape;
  return obj;
}

Napi::Value TensorWrap::dispose(const Napi::CallbackInfo& info) {
  impl.buf.reset();  // idempotent; in-flight async reads and reshape views keep their own reference
  flushExternal(info.Env());  // the storage's last owner gone: V8 hears of it now
  return info.Env().Undefined();
}

}  // namespace fa
