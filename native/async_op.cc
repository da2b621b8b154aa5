// The Promise-returning forms of the heavy ops (see ops.h): an AsyncWorker that runs the kernel call
// off the JS thread, holding its input and output buffers until it ends.
#include <string>

#include "ops.h"

namespace fa {

namespace {

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, const char* op, Napi::Object result, std::vector<TensorImpl> held, std::function<void()> work)
      : Napi::AsyncWorker(env, "fused-adapters:op"), op_(op), held_(std::move(held)), work_(std::move(work)),
        deferred_(Napi::Promise::Deferred::New(env)) {
    result_ = Napi::Persistent(result);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    ticket_.wait();
    try {
      work_();
    } catch (const std::exception& e) {
      std::string msg = e.what(), prefix = op_ + ":";
      SetError(msg.rfind(prefix, 0) == 0 ? msg : prefix + " " + msg);
    }
    held_.clear();
    ticket_.finish();
  }
  void OnOK() override { deferred_.Resolve(result_.Value()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::string op_;
  std::vector<TensorImpl> held_;  // inputs' buffers stay alive until the kernel is done
  std::function<void()> work_;
  TicketHolder ticket_;  // runs after the work issued before it (deferred.h)
  Napi::ObjectReference result_;  // and the outputs'
  Napi::Promise::Deferred deferred_;
};

}  // namespace

std::vector<TensorImpl> heldArguments(const Napi::CallbackInfo& info) {
  std::vector<TensorImpl> held;
  for (size_t i = 0; i < info.Length(); i++)
    if (isTensor(info.Env(), info[i])) held.push_back(argTensor(info.Env(), info[i], "async", "argument"));
  return held;
}

Napi::Value runKernelAsync(Napi::Env env, const char* op, bool onCpu, Napi::Object result, std::vector<TensorImpl> held,
                           std::function<void()> work) {
  if (!onCpu) {
    auto d = Napi::Promise::Deferred::New(env);
    try {
      runKernel(env, op, work);
      d.Resolve(result);
    } catch (const Napi::Error& e) {
      d.Reject(e.Value());
    }
    return d.Promise();
  }
  settleQueue(env, op);
  auto* w = new OpWorker(env, op, result, std::move(held), std::move(work));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace fa
