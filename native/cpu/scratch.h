// Per-thread scratch buffers reused across op calls, so a hot loop of adapter calls does not
// allocate (and page-fault) fresh N×d buffers every time. Slot k of the calling thread grows to the
// largest size asked for; buffers above kScratchKeepBytes are released when the call ends
// (ScratchScope), so one huge call does not pin its memory.
#pragma once
#include <cstddef>

namespace fa {
namespace cpu {

constexpr size_t kScratchSlots = 8;
constexpr size_t kScratchKeepBytes = size_t(64) << 20;

// n floats in slot `slot` (contents undefined), valid until the next request of that slot on this thread.
float* scratch(size_t slot, size_t n);

// Trims oversized slots of this thread when it goes out of scope.
struct ScratchScope {
  ~ScratchScope();
};

}  // namespace cpu
}  // namespace fa
