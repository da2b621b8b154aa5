// Freed host tensor buffers of 1 MiB and more are kept (up to a cap) and handed to the next
// allocation of the same size, as the CUDA allocator does for device memory: a loop that makes and
// drops large outputs (an adapter forward per step) then reuses pages that are already mapped,
// instead of paying the kernel's page faults for a fresh mapping on every call. The cap is
// FUSED_ADAPTERS_HOST_CACHE_MB (default: an eighth of the machine's memory, at most 4 GiB; 0 turns the
// cache off). memoryStats('cpu').reservedBytes counts the cached bytes; the memory budget counts live
// tensors only; releaseCachedMemory() gives the cache back.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fa {

// 64-byte aligned host memory of `bytes` (already rounded by the caller); throws std::bad_alloc.
void* hostAlloc(size_t bytes);
void hostFree(void* p, size_t bytes);
uint64_t hostCachedBytes();
// Returns every cached block to the system.
void hostReleaseCache();

}  // namespace fa
