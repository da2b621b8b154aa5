// Deferred CPU work and the issue order of async work (see deferred.h).
#include "deferred.h"

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <unordered_set>
#include <string>
#include <vector>

namespace fa {

struct WorkOrder::State {
  std::mutex m;
  std::condition_variable cv;
  uint64_t next = 0;       // tickets handed out
  uint64_t completed = 0;  // every ticket below this is done
  std::set<uint64_t> early;  // done out of turn (a worker cancelled before it ran)
};

std::shared_ptr<WorkOrder::State> WorkOrder::makeState() { return std::make_shared<State>(); }

uint64_t WorkOrder::take() {
  std::lock_guard<std::mutex> lock(s_->m);
  return s_->next++;
}

void WorkOrder::waitTurn(uint64_t t) {
  std::unique_lock<std::mutex> lock(s_->m);
  s_->cv.wait(lock, [&] { return s_->completed >= t; });
}

void WorkOrder::done(uint64_t t) {
  std::lock_guard<std::mutex> lock(s_->m);
  s_->early.insert(t);
  while (s_->early.count(s_->completed)) s_->early.erase(s_->completed++);
  s_->cv.notify_all();
}

void WorkOrder::waitAll() {
  std::unique_lock<std::mutex> lock(s_->m);
  uint64_t upTo = s_->next;
  s_->cv.wait(lock, [&] { return s_->completed >= upTo; });
}

namespace {

struct Job {
  const char* op;
  std::function<void()> fn;
  std::vector<TensorImpl> holds;
};

struct ThreadState {
  int depth = 0;
  std::vector<Job> queue;
  std::vector<TensorImpl> pendingHolds;
  std::unordered_set<const Buffer*> outputs;  // allocated while deferring, since the last settle()
  std::shared_ptr<WorkOrder> order = std::make_shared<WorkOrder>();
  double queued = 0, forced = 0;  // kernels queued; queues run early on the JS thread (deferredStats)
};

thread_local ThreadState tls;

// FUSED_ADAPTERS_DEBUG_DEFERRED=1: name each op or read that runs a queue early (why a pass blocks).
bool debugForced() {
  static const bool on = [] {
    const char* v = std::getenv("FUSED_ADAPTERS_DEBUG_DEFERRED");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

// Runs the jobs in order, each job's buffers released as soon as it has run. On a failure the rest is
// dropped (their inputs would be garbage) and "op: message" returned.
std::string runJobs(std::vector<Job>& jobs) {
  std::string err;
  for (Job& j : jobs) {
    if (err.empty()) {
      try {
        j.fn();
      } catch (const std::exception& e) {
        std::string msg = e.what(), prefix = std::string(j.op) + ":";
        err = msg.rfind(prefix, 0) == 0 ? msg : prefix + " " + msg;
      }
    }
    j.fn = nullptr;
    j.holds.clear();
  }
  jobs.clear();
  return err;
}

class DeferredWorker : public Napi::AsyncWorker {
 public:
  DeferredWorker(Napi::Env env, std::vector<Job> jobs)
      : Napi::AsyncWorker(env, "fused-adapters:deferred"), jobs_(std::move(jobs)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    ticket_.wait();
    std::string err = runJobs(jobs_);
    ticket_.finish();  // before OnOK: the JS thread may be waiting for it in settle()
    if (!err.empty()) SetError(err);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::vector<Job> jobs_;
  TicketHolder ticket_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value DeferBegin(const Napi::CallbackInfo& info) {
  tls.depth++;
  return info.Env().Undefined();
}

// deferEnd() -> Promise<void>: resolves when everything queued since deferBegin has run.
Napi::Value DeferEnd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (tls.depth == 0) fail(env, "deferEnd", "no deferBegin() to end");
  if (--tls.depth > 0 || tls.queue.empty()) {
    if (tls.depth == 0) tls.pendingHolds.clear();
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  tls.pendingHolds.clear();
  auto* w = new DeferredWorker(env, std::move(tls.queue));
  tls.queue.clear();
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Value Deferring(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), tls.depth > 0); }

// deferredStats() -> { queued, forced }: kernels queued so far, and how often a read or an op that
// cannot be queued ran the queue early on the JS thread (tests: a pass that should be all queued).
Napi::Value DeferredStats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("queued", tls.queued);
  o.Set("forced", tls.forced);
  return o;
}

}  // namespace

std::shared_ptr<WorkOrder> workOrder() { return tls.order; }

bool deferring() { return tls.depth > 0; }

void holdForDeferred(const TensorImpl& t) {
  if (tls.depth > 0 && t.device == kCpu) tls.pendingHolds.push_back(t);
}

void noteDeferredOutput(const TensorImpl& t) {
  if (tls.depth > 0 && t.device == kCpu) tls.outputs.insert(t.buf.get());
}

bool pendingOutput(const TensorImpl& t) { return !tls.outputs.empty() && tls.outputs.count(t.buf.get()) > 0; }

void enqueueDeferred(const char* op, std::function<void()> work) {
  tls.queued++;
  tls.queue.push_back(Job{op, std::move(work), std::move(tls.pendingHolds)});
  tls.pendingHolds.clear();
}

void settle(Napi::Env env, const char* why) {
  if (tls.queue.empty()) {
    tls.order->waitAll();
    tls.outputs.clear();
    return;
  }
  std::vector<Job> jobs = std::move(tls.queue);
  tls.queue.clear();
  tls.forced++;
  if (debugForced()) fprintf(stderr, "fused-adapters: %s ran the deferred queue on the JS thread\n", why);
  tls.order->waitAll();
  tls.outputs.clear();
  std::string err = runJobs(jobs);
  if (!err.empty()) throw Napi::Error::New(env, err);
}

void settleQueue(Napi::Env env, const char* why) {
  if (!tls.queue.empty()) settle(env, why);
}

void registerDeferredOps(Napi::Env env, Napi::Object exports) {
  exports.Set("deferBegin", Napi::Function::New(env, DeferBegin, "deferBegin"));
  exports.Set("deferEnd", Napi::Function::New(env, DeferEnd, "deferEnd"));
  exports.Set("deferredStats", Napi::Function::New(env, DeferredStats, "deferredStats"));
  exports.Set("deferring", Napi::Function::New(env, Deferring, "deferring"));
}

}  // namespace fa
