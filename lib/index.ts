// Public exports only.
export { buildInfo, devices, defaultDevice, memoryStats, memoryBudget, setMemoryBudget, synchronize } from './backend';
export type { BuildInfo, DeviceInfo, MemoryBudget, MemoryStats } from './backend';
export { Tensor, tensor, empty, full, zeros, ones, randn, rand } from './tensor';
export type { DType, FloatDType, TensorOptions, RandomOptions } from './tensor';
export { matmul, stack, add, sub, mul, scale, rowSum, colSum, cast, fill, randomFill, activation, activationGrad } from './ops';
export type { ActivationName } from './ops';
export { adapterForward, adapterBackward, adapterForwardBatched } from './adapters/functional';
export type {
  Activation, AdapterPath, AdapterWeights, AdapterOptions, AdapterSaved, AdapterGradients, StackedAdapterWeights,
} from './adapters/functional';
export { BottleneckAdapter, PARAM_NAMES } from './adapters/bottleneck';
export type { BottleneckAdapterConfig, AdapterInit, AdapterScaling } from './adapters/bottleneck';
export * from './nn';
export { loadBackbone } from './backbone/load';
export type { LoadOptions } from './backbone/load';
export { Backbone, ForwardResult } from './backbone/model';
export { NonFiniteError } from './backbone/finite';
export type { ForwardOptions } from './backbone/model';
export type { ModelInputs } from './backbone/inputs';
export { resolveConfig, DEFAULT_CONFIGS } from './backbone/adapterConfig';
export type { BnConfig, AdapterConfigInput } from './backbone/adapterConfig';
export type { EncoderConfig } from './backbone/config';
export { ClassificationHead } from './backbone/heads';
export type { HeadConfig } from './backbone/heads';
export * from './optim';
export { saveAdapter, loadAdapter, saveHead, loadHead } from './adapters/files';
export { Tokenizer } from './train/tokenizer';
export type { EncodedBatch } from './train/tokenizer';
export { readExamples, LabelMap, DataLoader } from './train/data';
export type { Example, Batch } from './train/data';
export { buildVocab, buildWordPieceTokenizerJson } from './train/vocab';
export { train, evaluate } from './train/trainer';
export type { TrainOptions, TrainResult } from './train/trainer';
export type { Metrics } from './train/metrics';
export { runDemo } from './demo/run';
export { resolveModelDir, hubCacheDir, downloadFromHub, placeInHubCache } from './io/hub';
export type { HubOptions } from './io/hub';
