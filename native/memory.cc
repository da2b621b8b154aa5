#include "memory.h"

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
std::map<int, MemStats> gStats;  // per device; host reserved == allocated
}  // namespace

Buffer::Buffer(int device, size_t bytes) : bytes_(bytes), device_(device) {
  size_t n = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  if (device == kCpu) {
    ptr_ = std::aligned_alloc(64, n);
    if (!ptr_) throw std::runtime_error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  } else {
#ifdef FA_WITH_CUDA
    ptr_ = cuda::deviceAlloc(device, n);
#else
    throw std::runtime_error("this build has no CUDA support");
#endif
  }
  std::lock_guard<std::mutex> lock(gMutex);
  MemStats& s = gStats[device];
  s.allocatedBytes += bytes_;
  s.liveTensors++;
}

Buffer::~Buffer() {
  if (device_ == kCpu) std::free(ptr_);
#ifdef FA_WITH_CUDA
  else cuda::deviceFree(device_, ptr_, bytes_ == 0 ? 64 : (bytes_ + 63) / 64 * 64);
#endif
  std::lock_guard<std::mutex> lock(gMutex);
  MemStats& s = gStats[device_];
  s.allocatedBytes -= bytes_;
  s.liveTensors--;
}

MemStats memStats(int device) {
  MemStats s;
  {
    std::lock_guard<std::mutex> lock(gMutex);
    auto it = gStats.find(device);
    if (it != gStats.end()) s = it->second;
  }
  if (device == kCpu) s.reservedBytes = s.allocatedBytes;
#ifdef FA_WITH_CUDA
  else s.reservedBytes = cuda::reservedBytes(device);
#endif
  return s;
}

}  // namespace fa
