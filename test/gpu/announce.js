// jest globalSetup of `npm run test:gpu`: says once, before the suites, whether they run and on
// what, or why they are skipped (jest itself lists skipped suites without a reason).
const path = require('path');

module.exports = async () => {
  const { buildInfo, devices } = require(path.join(__dirname, '..', '..', 'dist', 'lib'));
  const info = buildInfo();
  if (info.cudaUsable) {
    const gpus = devices().filter((d) => d.kind === 'cuda').map((d) => `${d.id} ${d.name} (sm_${String(d.computeCapability).replace('.', '')})`);
    console.log(`\ntest/gpu: running on ${gpus.join(', ')}; cuBLAS ${info.cublas ?? 'not loaded'}`);
  } else {
    const why = info.cudaCompiled ? info.cudaReason ?? 'no usable CUDA device' : 'this build has no CUDA backend (nvcc was not found: run scripts/setup-cuda.sh, then npm run build:native)';
    console.log(`\ntest/gpu: every GPU suite is SKIPPED, not passed: ${why}`);
  }
};
