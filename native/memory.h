// Host and device allocations with per-device accounting. Device memory goes
// through the CUDA caching allocator; host memory is 64-byte aligned.
//
// Tensor storage additionally carries an ExternalAccount: the bytes are reported
// to the owning JS thread's V8 heap (so dropped tensors create GC pressure) and
// are checked against the process-wide memory budget.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace fa {

constexpr int kCpu = -1;  // device index of the host
constexpr uint64_t kNoLimit = UINT64_MAX;

struct MemStats {
  size_t allocatedBytes = 0;  // bytes handed to live buffers
  size_t reservedBytes = 0;   // bytes held from the system (>= allocated on CUDA: the cache)
  int64_t liveTensors = 0;    // buffers not yet freed
  uint64_t limitBytes = kNoLimit;  // the budget for this device (kNoLimit: none)
};

// Bytes of tensor storage one JS thread (one napi_env) has reported to V8 with
// napi_adjust_external_memory. Buffers add to `pending` when they are created and
// subtract when they are freed, from whatever thread; only the JS thread moves
// `pending` into `reported` (flushExternal in tensor.cc), so nothing calls into V8
// off that thread or from a finalizer.
struct ExternalAccount {
  std::atomic<int64_t> pending{0};   // change not yet reported to V8
  std::atomic<int64_t> reported{0};  // net bytes reported to V8 (>= 0)
};

// Thrown when a tensor allocation would exceed the memory budget.
class BudgetError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One allocation. Freed when the last owner lets go.
class Buffer {
 public:
  // Transient buffer (staging, conversions): accounted per device, not budgeted, not reported to V8.
  Buffer(int device, size_t bytes);  // throws std::runtime_error on failure
  // Tensor storage: checked against the budget (BudgetError) and reported through `account`.
  Buffer(int device, size_t bytes, std::shared_ptr<ExternalAccount> account);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }

 private:
  void allocate(bool budgeted);
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = kCpu;
  std::shared_ptr<ExternalAccount> account_;
};

MemStats memStats(int device);

// The budget: `host` for the CPU, `device` for each CUDA device (kNoLimit: none). Process-wide.
void setMemoryBudget(uint64_t host, uint64_t device);
uint64_t hostMemoryLimit();
uint64_t deviceMemoryLimit();
// Applies the limits read from the environment, once per process (later calls, e.g. from
// worker threads loading the addon again, do nothing). Returns whether it applied them.
bool applyEnvMemoryBudget(uint64_t host, uint64_t device);

// "12.0 MiB"
std::string formatBytes(uint64_t bytes);

}  // namespace fa
