// Op bindings: validate arguments, allocate outputs, pick the backend, call it.
#pragma once
#include <napi.h>

namespace fa {

void registerBasicOps(Napi::Env env, Napi::Object exports);
void registerAdapterOps(Napi::Env env, Napi::Object exports);
void registerNnOps(Napi::Env env, Napi::Object exports);
void registerOptimOps(Napi::Env env, Napi::Object exports);
void registerDecoderOps(Napi::Env env, Napi::Object exports);
void registerGenerationOps(Napi::Env env, Napi::Object exports);

// Runs a kernel call, turning a C++ exception into a JS Error named after the op.
template <typename F>
void runKernel(Napi::Env env, const char* op, F&& f) {
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

}  // namespace fa
