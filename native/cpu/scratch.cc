#include "scratch.h"

#include <vector>

namespace fa {
namespace cpu {

namespace {
thread_local std::vector<float> slots[kScratchSlots];
}

float* scratch(size_t slot, size_t n) {
  std::vector<float>& v = slots[slot];
  if (v.size() < n) {
    v.clear();
    v.shrink_to_fit();
    v.resize(n);
  }
  return v.data();
}

ScratchScope::~ScratchScope() {
  for (auto& v : slots)
    if (v.size() * sizeof(float) > kScratchKeepBytes) std::vector<float>().swap(v);
}

}  // namespace cpu
}  // namespace fa
