// Op bindings: validate arguments, allocate outputs, pick the backend, call it.
#pragma once
#include <napi.h>

#include <functional>
#include <vector>

#include "deferred.h"
#include "tensor.h"

namespace fa {

void registerBasicOps(Napi::Env env, Napi::Object exports);
void registerAdapterOps(Napi::Env env, Napi::Object exports);
void registerNnOps(Napi::Env env, Napi::Object exports);
void registerOptimOps(Napi::Env env, Napi::Object exports);
void registerDecoderOps(Napi::Env env, Napi::Object exports);
void registerGenerationOps(Napi::Env env, Napi::Object exports);
void registerFusionOps(Napi::Env env, Napi::Object exports);

// Runs a kernel call now, after the work issued before it (settle(), deferred.h), turning a C++
// exception into a JS Error named after the op.
template <typename F>
void runKernel(Napi::Env env, const char* op, F&& f) {
  settle(env, op);
  try {
    f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::string prefix = std::string(op) + ":";
    throw Napi::Error::New(env, msg.rfind(prefix, 0) == 0 ? msg : prefix + " " + msg);
  }
}

// A kernel that may be queued: while deferring (deferred.h) a CPU kernel is queued, else it runs now.
// `f` must capture by value (pointers, sizes, TensorImpl copies), never a reference to a binding's
// local: it may run after the binding has returned.
template <typename F>
void deferKernel(Napi::Env env, const char* op, int device, F f) {
  if (device == kCpu && deferring()) {
    enqueueDeferred(op, std::function<void()>(std::move(f)));
    return;
  }
  runKernel(env, op, f);
}

// The tensors among a call's arguments, copied: each copy holds its buffer, so an op running on a
// worker thread reads valid memory even if the caller disposes an input meanwhile.
std::vector<TensorImpl> heldArguments(const Napi::CallbackInfo& info);

// The Promise-returning form of an op whose outputs are already allocated in `result`: on the CPU,
// `work` runs on a libuv worker thread and the event loop goes on; on CUDA it runs at once (kernel
// launches are asynchronous already). The promise resolves with `result`, or rejects with the op's
// error. `work` must capture by value: the binding's locals are gone when it runs.
Napi::Value runKernelAsync(Napi::Env env, const char* op, bool onCpu, Napi::Object result, std::vector<TensorImpl> held,
                           std::function<void()> work);

}  // namespace fa
