// CUDA bottleneck adapter (contract in native/adapter.h). Two paths, both kept:
//   "cublas": GEMMs through cuBLAS, bias/activation/scale/dropout/residual in small kernels;
//   "fused":  row-tile kernels (tensor cores for bf16/fp16) that compute the whole
//             per-row chain in one launch; weight gradients through cuBLAS (deterministic).
// path: "auto" picks fused where the shape fits; the return value names the path used.
#pragma once
#include <string>

#include "../native/adapter.h"

namespace fa {
namespace cuda {

std::string adapterForward(int dev, const AdapterArgs& a, void* out, float* hPre, const std::string& path);
std::string adapterBackward(int dev, const AdapterArgs& a, const void* dOut, const float* hPre,
                            const AdapterGrads& g, const std::string& path);
// rowAdapter and scales are host arrays; one kernel launch whatever the number of adapters.
std::string adapterForwardBatched(int dev, const BatchedArgs& b, void* out, const std::string& path);

}  // namespace cuda
}  // namespace fa
