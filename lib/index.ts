// Public exports only.
export { buildInfo, devices, defaultDevice, memoryStats, synchronize } from './backend';
export type { BuildInfo, DeviceInfo, MemoryStats } from './backend';
export { Tensor, tensor, empty, full, zeros, ones, randn, rand } from './tensor';
export type { DType, FloatDType, TensorOptions, RandomOptions } from './tensor';
export { matmul, add, sub, mul, scale, rowSum, colSum, cast, fill, randomFill } from './ops';
