// ESM entry: re-exports the CommonJS build so both module systems share one addon instance.
import cjs from '../dist/lib/index.js';

export const {
  buildInfo, devices, defaultDevice, memoryStats, synchronize,
  Tensor, tensor, empty, full, zeros, ones, randn, rand,
  matmul, add, sub, mul, scale, rowSum, colSum, cast, fill, randomFill, activation, activationGrad,
  adapterForward, adapterBackward, adapterForwardBatched, BottleneckAdapter, PARAM_NAMES,
  layerNorm, layerNormBackward, maskedSoftmax, maskedSoftmaxBackward, transpose12, embedding, embeddingBackward,
  dropout, dropoutBackward, softmaxCrossEntropy,
  loadBackbone, Backbone, ForwardResult, resolveConfig, DEFAULT_CONFIGS, ClassificationHead,
} = cjs;
export default cjs;
