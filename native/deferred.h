// Deferred CPU work: how a whole forward, backward or decode step written as synchronous op calls runs
// off the JS thread. Between deferBegin() and deferEnd() the CPU ops that support it queue their kernel
// instead of running it (outputs are allocated at once, so JS goes on building the graph); deferEnd()
// hands the queue to one libuv worker and returns a Promise for its end.
//
// Order is the contract: every piece of CPU work issued from a JS thread — a synchronous op, a queued
// batch, an async op (matmulAsync), an async read (data()) — takes effect in the order it was issued.
// Async work takes a ticket when issued and waits for its turn on the worker; synchronous work and host
// reads first settle(): they run what is queued and wait for every ticket already handed out. So reading
// a result early is correct, only not asynchronous; an op that cannot be queued is the same.
//
// Memory: each queued kernel holds the buffers of the tensors its binding touched (arguments and
// outputs) until it has run, so JS may dispose intermediates as usual.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "tensor.h"

namespace fa {

// The issue order of one JS thread's async work.
class WorkOrder {
 public:
  uint64_t take();             // JS thread: the next ticket
  void waitTurn(uint64_t t);   // worker: until every earlier ticket is done
  void done(uint64_t t);       // worker: ticket t is done (call even on failure)
  void waitAll();              // JS thread: until every ticket handed out is done

 private:
  struct State;
  std::shared_ptr<State> s_ = makeState();
  static std::shared_ptr<State> makeState();
  friend class TicketHolder;
};

// This JS thread's order (worker_threads have their own).
std::shared_ptr<WorkOrder> workOrder();

// A ticket that a worker waits on and completes exactly once.
class TicketHolder {
 public:
  TicketHolder() : order_(workOrder()), ticket_(order_->take()) {}
  void wait() { order_->waitTurn(ticket_); }
  void finish() {
    if (!finished_) order_->done(ticket_);
    finished_ = true;
  }
  ~TicketHolder() { finish(); }

 private:
  std::shared_ptr<WorkOrder> order_;
  uint64_t ticket_;
  bool finished_ = false;
};

bool deferring();
// Holds a tensor's buffer for the next queued kernel (argTensor/newTensor call it while deferring).
void holdForDeferred(const TensorImpl& t);
// Marks a tensor allocated while deferring: its values are not there until the queue has run.
void noteDeferredOutput(const TensorImpl& t);
// Whether a tensor may still be written by queued or in-flight work (a binding that reads values at
// bind time, such as an index check, settles first when it is).
bool pendingOutput(const TensorImpl& t);
// Queues `work` (which must capture by value) with the buffers held since the last queued kernel.
void enqueueDeferred(const char* op, std::function<void()> work);
// Runs queued kernels now and waits for in-flight async work (see above). Throws a JS Error named after
// the failing op. `why` names the caller (FUSED_ADAPTERS_DEBUG_DEFERRED=1 prints it when a queue is run).
void settle(Napi::Env env, const char* why);
// Runs queued kernels now, if any (before async work is issued: it must come after them).
void settleQueue(Napi::Env env, const char* why);

void registerDeferredOps(Napi::Env env, Napi::Object exports);

}  // namespace fa
