// Public exports only.
export { buildInfo, devices, defaultDevice, memoryStats, synchronize } from './backend';
export type { BuildInfo, DeviceInfo, MemoryStats } from './backend';
export { Tensor, tensor, empty, full, zeros, ones, randn, rand } from './tensor';
export type { DType, FloatDType, TensorOptions, RandomOptions } from './tensor';
export { matmul, add, sub, mul, scale, rowSum, colSum, cast, fill, randomFill, activation, activationGrad } from './ops';
export type { ActivationName } from './ops';
export { adapterForward, adapterBackward, adapterForwardBatched } from './adapters/functional';
export type {
  Activation, AdapterPath, AdapterWeights, AdapterOptions, AdapterSaved, AdapterGradients, StackedAdapterWeights,
} from './adapters/functional';
export { BottleneckAdapter, PARAM_NAMES } from './adapters/bottleneck';
export type { BottleneckAdapterConfig, AdapterInit, AdapterScaling } from './adapters/bottleneck';
