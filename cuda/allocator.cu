#include <map>
#include <mutex>
#include <vector>

#include "allocator.h"
#include "common.cuh"

namespace fa {
namespace cuda {

namespace {

struct Pool {
  std::map<size_t, std::vector<void*>> free;  // rounded size -> cached blocks
  size_t reserved = 0;
};

std::mutex gMutex;
std::map<int, Pool> gPools;

// Small blocks round to 512 bytes, large ones to 2 MiB, so freed blocks fit later requests.
size_t roundSize(size_t n) {
  const size_t small = 512, large = size_t(2) << 20;
  return n < large ? (n + small - 1) / small * small : (n + large - 1) / large * large;
}

void releaseCached(int dev, Pool& pool) {
  cudaSetDevice(dev);
  for (auto& kv : pool.free) {
    for (void* p : kv.second) {
      cudaFree(p);
      pool.reserved -= kv.first;
    }
  }
  pool.free.clear();
}

}  // namespace

void* deviceAlloc(int dev, size_t bytes) {
  size_t n = roundSize(bytes);
  std::lock_guard<std::mutex> lock(gMutex);
  Pool& pool = gPools[dev];
  auto it = pool.free.find(n);
  if (it != pool.free.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  check(cudaSetDevice(dev), "alloc", "cudaSetDevice");
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, n);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    releaseCached(dev, pool);
    err = cudaMalloc(&p, n);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("alloc: out of device memory on cuda:" + std::to_string(dev) + " allocating " +
                             std::to_string(bytes) + " bytes (" + cudaGetErrorString(err) + ")");
  }
  pool.reserved += n;
  return p;
}

void deviceFree(int dev, void* p, size_t bytes) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(gMutex);
  gPools[dev].free[roundSize(bytes)].push_back(p);
}

size_t reservedBytes(int dev) {
  std::lock_guard<std::mutex> lock(gMutex);
  auto it = gPools.find(dev);
  return it == gPools.end() ? 0 : it->second.reserved;
}

void emptyCache(int dev) {
  std::lock_guard<std::mutex> lock(gMutex);
  auto it = gPools.find(dev);
  if (it != gPools.end()) releaseCached(dev, it->second);
}

}  // namespace cuda
}  // namespace fa
