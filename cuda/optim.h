// CUDA versions of native/cpu/optim.h: the same descriptors (device pointers) plus the
// device; each is one kernel launch over every tensor, queued on the device's stream.
// The small descriptor table is uploaded first (a synchronizing host-to-device copy).
#pragma once
#include <cstddef>

#include "../native/cpu/optim.h"

namespace fa {
namespace cuda {

void adamwStep(int dev, const AdamWTensor* ts, size_t count, const AdamWConsts& c);
// Deterministic: squares in fp32, per-thread fp32 sums of at most 4 squares added into
// double, one double partial per chunk (fixed-order block reduction), the partials totalled
// in chunk order by the last block of the same launch. Waits for the result.
double sumOfSquares(int dev, const NormTensor* ts, size_t count);
void scaleInPlace(int dev, const NormTensor* ts, size_t count, float s);

}  // namespace cuda
}  // namespace fa
