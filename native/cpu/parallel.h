// A small persistent thread pool for the CPU kernels: elementwise passes and
// reductions split rows across cores. BLAS brings its own threads for GEMMs.
#pragma once
#include <cstddef>
#include <functional>

namespace fa {
namespace cpu {

// Calls body(begin, end) over [0, n) in chunks of at least `grain`, on all cores;
// returns when every chunk is done. Exceptions from a chunk are rethrown here.
void parallelFor(size_t n, size_t grain, const std::function<void(size_t, size_t)>& body);

int threadCount();

}  // namespace cpu
}  // namespace fa
