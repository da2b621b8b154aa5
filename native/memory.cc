#include "memory.h"

#include "host_cache.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#ifdef FA_WITH_CUDA
#include "../cuda/allocator.h"
#endif

namespace fa {

namespace {
std::mutex gMutex;
std::map<int, MemStats> gStats;  // per device; reserved = allocated + the allocator caches' bytes
uint64_t gHostLimit = kNoLimit;    // guarded by gMutex
uint64_t gDeviceLimit = kNoLimit;  // per CUDA device; guarded by gMutex
bool gEnvApplied = false;          // guarded by gMutex

size_t rounded(size_t bytes) { return bytes == 0 ? 64 : (bytes + 63) / 64 * 64; }

std::string deviceLabel(int device) { return device == kCpu ? "cpu" : "cuda:" + std::to_string(device); }
}  // namespace

std::string formatBytes(uint64_t bytes) {
  char buf[64];
  if (bytes < 1024) {
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  } else {
    const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = double(bytes) / 1024;
    int u = 0;
    while (v >= 1024 && u < 4) {
      v /= 1024;
      u++;
    }
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

Buffer::Buffer(int device, size_t bytes) : bytes_(bytes), device_(device) { allocate(false); }

Buffer::Buffer(int device, size_t bytes, std::shared_ptr<ExternalAccount> account)
    : bytes_(bytes), device_(device), account_(std::move(account)) {
  allocate(true);
  if (account_) account_->pending.fetch_add(int64_t(bytes_));
}

void Buffer::allocate(bool budgeted) {
  {
    // Check and reserve under one lock, so concurrent allocations cannot pass the budget together.
    std::lock_guard<std::mutex> lock(gMutex);
    MemStats& s = gStats[device_];
    if (budgeted) {
      uint64_t limit = device_ == kCpu ? gHostLimit : gDeviceLimit;
      if (limit != kNoLimit && (bytes_ > limit || s.allocatedBytes > limit - bytes_)) {
        throw BudgetError("tensor allocation of " + formatBytes(bytes_) + " on " + deviceLabel(device_) +
                          " exceeds the memory budget (" + (device_ == kCpu ? "host" : "device") + " limit " +
                          formatBytes(limit) + ", " + formatBytes(s.allocatedBytes) +
                          " in live tensors); dispose() tensors you no longer need or raise the limit with "
                          "setMemoryBudget");
      }
    }
    s.allocatedBytes += bytes_;
    s.liveTensors++;
  }
  try {
    if (device_ == kCpu) {
      try {
        ptr_ = hostAlloc(rounded(bytes_));
      } catch (const std::bad_alloc&) {
        throw std::runtime_error("out of host memory allocating " + std::to_string(bytes_) + " bytes");
      }
    } else {
#ifdef FA_WITH_CUDA
      ptr_ = cuda::deviceAlloc(device_, rounded(bytes_));
#else
      throw std::runtime_error("this build has no CUDA support");
#endif
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(gMutex);
    MemStats& s = gStats[device_];
    s.allocatedBytes -= bytes_;
    s.liveTensors--;
    throw;
  }
}

Buffer::~Buffer() {
  if (device_ == kCpu) hostFree(ptr_, rounded(bytes_));
#ifdef FA_WITH_CUDA
  else cuda::deviceFree(device_, ptr_, rounded(bytes_));
#endif
  {
    std::lock_guard<std::mutex> lock(gMutex);
    MemStats& s = gStats[device_];
    s.allocatedBytes -= bytes_;
    s.liveTensors--;
  }
  // Any thread: the JS thread reports this to V8 on its next call.
  if (account_) account_->pending.fetch_sub(int64_t(bytes_));
}

MemStats memStats(int device) {
  MemStats s;
  {
    std::lock_guard<std::mutex> lock(gMutex);
    auto it = gStats.find(device);
    if (it != gStats.end()) s = it->second;
    s.limitBytes = device == kCpu ? gHostLimit : gDeviceLimit;
  }
  if (device == kCpu) s.reservedBytes = s.allocatedBytes + hostCachedBytes();
#ifdef FA_WITH_CUDA
  else s.reservedBytes = cuda::reservedBytes(device);
#endif
  return s;
}

void setMemoryBudget(uint64_t host, uint64_t device) {
  std::lock_guard<std::mutex> lock(gMutex);
  gHostLimit = host;
  gDeviceLimit = device;
  gEnvApplied = true;  // an explicit budget wins over the environment read later (e.g. by a worker)
}

uint64_t hostMemoryLimit() {
  std::lock_guard<std::mutex> lock(gMutex);
  return gHostLimit;
}

uint64_t deviceMemoryLimit() {
  std::lock_guard<std::mutex> lock(gMutex);
  return gDeviceLimit;
}

bool applyEnvMemoryBudget(uint64_t host, uint64_t device) {
  std::lock_guard<std::mutex> lock(gMutex);
  if (gEnvApplied) return false;
  gEnvApplied = true;
  gHostLimit = host;
  gDeviceLimit = device;
  return true;
}

}  // namespace fa
