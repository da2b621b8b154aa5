// The CUDA side as the bindings see it: plain C++, no CUDA headers, so that
// native/ compiles without a CUDA toolkit. Every function throws std::runtime_error
// (naming the op) instead of exiting.
#pragma once
#include <cstddef>
#include <string>

namespace fa {
namespace cuda {

struct Probe {
  bool usable = false;
  std::string reason;   // why not usable
  std::string cublas;   // the cuBLAS library loaded, e.g. "libcublas.so.13 (v13.0.0)"
  int deviceCount = 0;
};

// Runs once: driver, devices, compute capability, cuBLAS. Never throws.
const Probe& probe();

struct DeviceInfo {
  std::string name;
  size_t memoryBytes = 0;
  int major = 0, minor = 0;
};
DeviceInfo deviceInfo(int dev);

// The stream every op on `dev` is queued on (an opaque cudaStream_t).
void* stream(int dev);

void copyHostToDevice(int dev, void* dst, const void* src, size_t bytes, const char* op);
void copyDeviceToHost(int dev, void* dst, const void* src, size_t bytes, const char* op);  // synchronizes
void copyDeviceToDevice(int srcDev, const void* src, int dstDev, void* dst, size_t bytes, const char* op);
void synchronize(int dev, const char* op);

// CUDA-event timing on the device's stream (for benchmarks): start, then stop returns
// the milliseconds between them (waits for the stop event).
void timerStart(int dev);
float timerStop(int dev);

}  // namespace cuda
}  // namespace fa
