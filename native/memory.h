// Host and device allocations with per-device accounting. Device memory goes
// through the CUDA caching allocator; host memory is 64-byte aligned.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fa {

constexpr int kCpu = -1;  // device index of the host

struct MemStats {
  size_t allocatedBytes = 0;  // bytes handed to live buffers
  size_t reservedBytes = 0;   // bytes held from the system (>= allocated on CUDA: the cache)
  int64_t liveTensors = 0;    // buffers not yet freed
};

// One allocation. Freed when the last owner lets go.
class Buffer {
 public:
  Buffer(int device, size_t bytes);  // throws std::runtime_error on failure
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = kCpu;
};

MemStats memStats(int device);

}  // namespace fa
