#include <map>
#include <mutex>

#include "common.cuh"
#include "cublas.h"
#include "runtime.h"

namespace fa {
namespace cuda {

const Probe& probe() {
  static Probe p = [] {
    Probe r;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();
      r.reason = std::string("no usable CUDA driver or device (") + cudaGetErrorName(err) + ": " +
                 cudaGetErrorString(err) + ")";
      return r;
    }
    if (count == 0) {
      r.reason = "no CUDA device found";
      return r;
    }
    r.deviceCount = count;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major < 8) {
      r.reason = "cuda:0 (" + std::string(prop.name) + ") is sm_" + std::to_string(prop.major) +
                 std::to_string(prop.minor) + "; this build needs sm_80 or newer";
      return r;
    }
    std::string loaded, reason;
    if (!loadCublas(&loaded, &reason)) {
      r.reason = reason;
      return r;
    }
    r.cublas = loaded;
    r.usable = true;
    return r;
  }();
  return p;
}

DeviceInfo deviceInfo(int dev) {
  DeviceInfo info;
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, dev), "devices", "cudaGetDeviceProperties");
  info.name = prop.name;
  info.memoryBytes = prop.totalGlobalMem;
  info.major = prop.major;
  info.minor = prop.minor;
  return info;
}

void* stream(int dev) {
  static std::mutex m;
  static std::map<int, cudaStream_t> streams;
  std::lock_guard<std::mutex> lock(m);
  auto it = streams.find(dev);
  if (it != streams.end()) return it->second;
  check(cudaSetDevice(dev), "stream", "cudaSetDevice");
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream", "cudaStreamCreate");
  streams[dev] = s;
  return s;
}


void copyHostToDevice(int dev, void* dst, const void* src, size_t bytes, const char* op) {
  if (!bytes) return;
  DeviceGuard g(dev, op);
  // Pageable host memory: the copy is staged before returning, so src may be freed after.
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, S(dev)), op, "cudaMemcpy host to device");
  check(cudaStreamSynchronize(S(dev)), op, "cudaStreamSynchronize");
}

void copyDeviceToHost(int dev, void* dst, const void* src, size_t bytes, const char* op) {
  if (!bytes) return;
  DeviceGuard g(dev, op);
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, S(dev)), op, "cudaMemcpy device to host");
  check(cudaStreamSynchronize(S(dev)), op, "cudaStreamSynchronize");
}

void copyDeviceToDevice(int srcDev, const void* src, int dstDev, void* dst, size_t bytes, const char* op) {
  if (!bytes) return;
  if (srcDev == dstDev) {
    DeviceGuard g(dstDev, op);
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, S(dstDev)), op, "cudaMemcpy device to device");
    return;
  }
  synchronize(srcDev, op);
  DeviceGuard g(dstDev, op);
  check(cudaMemcpyPeerAsync(dst, dstDev, src, srcDev, bytes, S(dstDev)), op, "cudaMemcpyPeer");
}

void synchronize(int dev, const char* op) {
  DeviceGuard g(dev, op);
  check(cudaStreamSynchronize(S(dev)), op, "cudaStreamSynchronize");
}

namespace {
struct EventPair { cudaEvent_t start = nullptr, stop = nullptr; };
std::map<int, EventPair>& timers() {
  static std::map<int, EventPair> t;
  return t;
}
}  // namespace

void timerStart(int dev) {
  DeviceGuard g(dev, "timer");
  EventPair& e = timers()[dev];
  if (!e.start) {
    check(cudaEventCreate(&e.start), "timer", "cudaEventCreate");
    check(cudaEventCreate(&e.stop), "timer", "cudaEventCreate");
  }
  check(cudaEventRecord(e.start, S(dev)), "timer", "cudaEventRecord");
}

float timerStop(int dev) {
  DeviceGuard g(dev, "timer");
  EventPair& e = timers()[dev];
  if (!e.start) throw std::runtime_error("timer: timerStop without timerStart");
  check(cudaEventRecord(e.stop, S(dev)), "timer", "cudaEventRecord");
  check(cudaEventSynchronize(e.stop), "timer", "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, e.start, e.stop), "timer", "cudaEventElapsedTime");
  return ms;
}

}  // namespace cuda
}  // namespace fa
