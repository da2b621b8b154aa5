// The tensor as Node sees it: an ObjectWrap holding a shared buffer, a shape,
// a dtype and a device. Bindings read tensors through argTensor(), which turns
// every misuse into a JS Error naming the op and the argument.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "dtype.h"
#include "memory.h"

namespace fa {

struct TensorImpl {
  std::shared_ptr<Buffer> buf;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  int device = kCpu;

  size_t numel() const {
    size_t n = 1;
    for (int64_t s : shape) n *= size_t(s);
    return n;
  }
  size_t bytes() const { return numel() * dtypeSize(dtype); }
  void* ptr() const { return buf->ptr(); }
  std::string shapeString() const;
  std::string deviceString() const { return device == kCpu ? "cpu" : "cuda:" + std::to_string(device); }
};

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit TensorWrap(const Napi::CallbackInfo& info);
  TensorImpl impl;
  bool disposed() const { return !impl.buf; }

 private:
  Napi::Value shape(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value isDisposed(const Napi::CallbackInfo& info);
  Napi::Value toArray(const Napi::CallbackInfo& info);
  Napi::Value data(const Napi::CallbackInfo& info);
  Napi::Value copyFrom(const Napi::CallbackInfo& info);
  Napi::Value to(const Napi::CallbackInfo& info);
  Napi::Value reshape(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
};

// Per-addon-instance state (worker threads load the addon again).
struct AddonData {
  Napi::FunctionReference tensorCtor;
  // Tensor storage bytes reported to this thread's V8 heap; shared with the buffers,
  // which may outlive the env (and be freed on other threads).
  std::shared_ptr<ExternalAccount> external = std::make_shared<ExternalAccount>();
};

// Reports the tensor storage allocated and freed since the last call to V8
// (napi_adjust_external_memory). JS thread only; cheap when nothing changed.
void flushExternal(Napi::Env env);

// Throws a JS Error "op: message".
[[noreturn]] void fail(Napi::Env env, const std::string& op, const std::string& msg);

// The live tensor passed as argument `name` of `op`, or a JS Error.
TensorImpl& argTensor(Napi::Env env, Napi::Value v, const char* op, const char* name);
bool isTensor(Napi::Env env, Napi::Value v);

// Allocates a tensor on `device` and wraps it for JS. While deferring (deferred.h) it counts as written
// by the queue unless `filledNow` (the caller fills it at once, as fromArray does).
Napi::Object newTensor(Napi::Env env, const std::vector<int64_t>& shape, DType dtype, int device, const char* op,
                       bool filledNow = false);
// Copies a typed array (Float32Array or Int32Array, t's element count) into a fresh host buffer: the
// source of a copy into t (JS memory may move once the binding returns).
TensorImpl stageTypedArray(Napi::Env env, const TensorImpl& t, Napi::Value v, const char* op);
// Copies src into dst now, converting the dtype and crossing devices as needed.
void copyConvert(const TensorImpl& src, const TensorImpl& dst, const char* op);
TensorImpl& implOf(Napi::Object obj);

// Validates a device index for `op` (CUDA compiled, usable, in range).
void checkDevice(Napi::Env env, int device, const char* op);
std::vector<int64_t> argShape(Napi::Env env, Napi::Value v, const char* op, const char* name);
DType argDType(Napi::Env env, Napi::Value v, const char* op, const char* name);

// Copies between any two tensors' storage (host/device), converting dtype.
void copyConvert(const TensorImpl& src, const TensorImpl& dst, const char* op);
// Reads a tensor into host fp32.
void readFloat(const TensorImpl& t, float* out, const char* op);

}  // namespace fa
