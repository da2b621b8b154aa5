#include "host_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>

namespace fa {

namespace {

constexpr size_t kMinCached = size_t(1) << 20;

std::mutex gMutex;
std::multimap<size_t, void*> gBlocks;  // size → free block
uint64_t gCached = 0;

// An eighth of the machine's memory, at most 4 GiB: enough for a BERT-base training step's
// activations to be reused from step to step (1.4 GiB there) without holding much of a small machine.
uint64_t defaultCap() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  uint64_t ram = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : uint64_t(4) << 30;
  return std::min<uint64_t>(ram / 8, uint64_t(4) << 30);
}

uint64_t capBytes() {
  static const uint64_t cap = [] {
    const char* v = std::getenv("FUSED_ADAPTERS_HOST_CACHE_MB");
    if (!v || !*v) return defaultCap();
    char* end = nullptr;
    unsigned long long mb = std::strtoull(v, &end, 10);
    return end && *end == '\0' ? uint64_t(mb) << 20 : defaultCap();
  }();
  return cap;
}

}  // namespace

void* hostAlloc(size_t bytes) {
  if (bytes >= kMinCached) {
    std::lock_guard<std::mutex> lock(gMutex);
    auto it = gBlocks.find(bytes);
    if (it != gBlocks.end()) {
      void* p = it->second;
      gBlocks.erase(it);
      gCached -= bytes;
      return p;
    }
  }
  void* p = std::aligned_alloc(64, bytes);
  if (!p && gCached) {  // memory is short: give the cache back and try again
    hostReleaseCache();
    p = std::aligned_alloc(64, bytes);
  }
  if (!p) throw std::bad_alloc();
  return p;
}

void hostFree(void* p, size_t bytes) {
  if (!p) return;
  if (bytes >= kMinCached) {
    std::lock_guard<std::mutex> lock(gMutex);
    if (gCached + bytes <= capBytes()) {
      gBlocks.emplace(bytes, p);
      gCached += bytes;
      return;
    }
    // the cache is full: this block goes back to the system
  }
  std::free(p);
}

uint64_t hostCachedBytes() {
  std::lock_guard<std::mutex> lock(gMutex);
  return gCached;
}

void hostReleaseCache() {
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(gMutex);
    blocks.swap(gBlocks);
    gCached = 0;
  }
  for (auto& b : blocks) std::free(b.second);
}

}  // namespace fa
