// ESM entry: re-exports the CommonJS build so both module systems share one addon instance.
// test/package.test.ts checks that this list matches the CommonJS exports.
import cjs from '../dist/lib/index.js';

export const {
  AdamW, Backbone, BottleneckAdapter, ClassificationHead, DEFAULT_CONFIGS, DataLoader,
  ForwardResult, LRSchedule, LabelMap, PARAM_NAMES, Tensor, Tokenizer, activation, activationGrad,
  adamwStep, adapterBackward, adapterForward, adapterForwardBatched, add, buildInfo, buildVocab,
  buildWordPieceTokenizerJson, cast, clipGradNorm, colSum, defaultDevice, defaultNoDecay, devices,
  dropout, dropoutBackward, embedding, embeddingBackward, empty, evaluate, fill, full,
  globalGradNorm, layerNorm, layerNormBackward, loadAdapter, loadBackbone, loadHead, lrAt,
  maskedSoftmax, maskedSoftmaxBackward, matmul, memoryStats, mul, ones, rand, randn, randomFill,
  readExamples, resolveConfig, rowSum, runDemo, saveAdapter, saveHead, scale, scaleInPlace,
  softmaxCrossEntropy, sub, sumOfSquares, synchronize, tensor, train, transpose12, zeros,
} = cjs;
export default cjs;
