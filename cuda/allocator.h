// Caching device allocator: freed blocks are kept per (device, rounded size) and
// reused, because cudaMalloc/cudaFree synchronize and are slow. Blocks are used
// on one stream per device, so reuse is ordered after the previous user's work.
#pragma once
#include <cstddef>

namespace fa {
namespace cuda {

void* deviceAlloc(int dev, size_t bytes);        // throws on out-of-memory (after emptying the cache)
void deviceFree(int dev, void* p, size_t bytes);  // never throws
size_t reservedBytes(int dev);
void emptyCache(int dev);

}  // namespace cuda
}  // namespace fa
