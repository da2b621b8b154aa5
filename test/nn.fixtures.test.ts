// The CPU transformer building blocks (lib/nn.ts, activation/activationGrad), fp32, against
// float64 PyTorch autograd references. Dropout (Philox) is not comparable with torch and has none.
// Fixtures: test/fixtures/nn.json, written by `/usr/bin/python3 scripts/gen_nn_fixtures.py`.
import * as fs from 'fs';
import * as path from 'path';
import {
  activation, activationGrad, embedding, embeddingBackward, layerNorm, layerNormBackward, maskedSoftmax,
  maskedSoftmaxBackward, softmaxCrossEntropy, tensor, transpose12,
} from '../lib';
import type { ActivationName } from '../lib';
import { expectClose } from './helpers';

interface LayerNormCase {
  op: 'layerNorm';
  name: string;
  shape: number[];
  eps: number;
  x: number[];
  residual?: number[];
  weight: number[];
  bias: number[];
  dOut: number[];
  out: number[];
  mean: number[];
  rstd: number[];
  dx: number[];
  dWeight: number[];
  dBias: number[];
}

interface MaskedSoftmaxCase {
  op: 'maskedSoftmax';
  name: string;
  shape: number[];
  scale: number;
  scores: number[];
  keyMask?: number[];
  dProbs: number[];
  probs: number[];
  dScores: number[];
}

interface ActivationCase {
  op: 'activation';
  name: string;
  activation: ActivationName;
  shape: number[];
  x: number[];
  dy: number[];
  y: number[];
  dx: number[];
}

interface EmbeddingCase {
  op: 'embedding';
  name: string;
  V: number;
  H: number;
  idsShape: number[];
  table: number[];
  ids: number[];
  dOut: number[];
  out: number[];
  dTable: number[];
}

interface CrossEntropyCase {
  op: 'crossEntropy';
  name: string;
  B: number;
  C: number;
  ignoreIndex: number;
  logits: number[];
  labels: number[];
  loss: number;
  dLogits: number[];
}

interface Transpose12Case {
  op: 'transpose12';
  name: string;
  shape: number[];
  x: number[];
  y: number[];
}

type NnCase = LayerNormCase | MaskedSoftmaxCase | ActivationCase | EmbeddingCase | CrossEntropyCase | Transpose12Case;

interface FixtureFile {
  generator: string;
  torch: string;
  cases: NnCase[];
}

const ROOT = path.join(__dirname, '..');
const FIXTURE = path.join(__dirname, 'fixtures', 'nn.json');
const fixtures = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as FixtureFile;

const RTOL = 1e-5;
const OPS: NnCase['op'][] = ['layerNorm', 'maskedSoftmax', 'activation', 'embedding', 'crossEntropy', 'transpose12'];

/** rtol 1e-5, atol 1e-5 · max|expected| of the array (so entries near zero don't fail spuriously). */
function checkArray(label: string, actual: ArrayLike<number>, expected: number[]): void {
  let maxAbs = 0;
  for (const v of expected) maxAbs = Math.max(maxAbs, Math.abs(v));
  try {
    expectClose(actual, expected, RTOL, RTOL * maxAbs);
  } catch (e) {
    throw new Error(`${label}: ${(e as Error).message}`);
  }
}

const prod = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const int32 = (values: number[], shape: number[]) => tensor(values, shape, { dtype: 'int32' });

function runLayerNorm(c: LayerNormCase): void {
  const H = c.shape[c.shape.length - 1];
  const rowsShape = c.shape.slice(0, -1);
  expect(c.x.length).toBe(prod(c.shape));
  const x = tensor(c.x, c.shape);
  const residual = c.residual ? tensor(c.residual, c.shape) : undefined;
  const weight = tensor(c.weight, [H]);
  const bias = tensor(c.bias, [H]);
  const fwd = layerNorm(x, weight, bias, { eps: c.eps, ...(residual ? { residual } : {}) });
  expect(fwd.out.shape).toEqual(c.shape);
  expect(fwd.mean.shape).toEqual(rowsShape);
  expect(fwd.rstd.shape).toEqual(rowsShape);
  checkArray('out', fwd.out.toArray(), c.out);
  checkArray('mean', fwd.mean.toArray(), c.mean);
  checkArray('rstd', fwd.rstd.toArray(), c.rstd);

  const g = layerNormBackward(tensor(c.dOut, c.shape), x, residual, weight, fwd.mean, fwd.rstd);
  expect(g.dx.shape).toEqual(c.shape);
  expect(g.dWeight.shape).toEqual([H]);
  expect(g.dBias.shape).toEqual([H]);
  checkArray('dx', g.dx.toArray(), c.dx);
  checkArray('dWeight', g.dWeight.toArray(), c.dWeight);
  checkArray('dBias', g.dBias.toArray(), c.dBias);
}

function runMaskedSoftmax(c: MaskedSoftmaxCase): void {
  expect(c.shape).toHaveLength(4);
  const [B, , , Tk] = c.shape;
  const scores = tensor(c.scores, c.shape);
  const keyMask = c.keyMask ? tensor(c.keyMask, [B, Tk]) : undefined;
  const probs = maskedSoftmax(scores, { scale: c.scale, ...(keyMask ? { keyMask } : {}) });
  expect(probs.shape).toEqual(c.shape);
  const p = probs.toArray();
  checkArray('probs', p, c.probs);
  if (c.keyMask) {
    // masked keys get probability exactly 0, as with the additive finfo.min mask
    const perBatch = prod(c.shape) / B;
    for (let i = 0; i < p.length; i++)
      if (c.keyMask[Math.floor(i / perBatch) * Tk + (i % Tk)] === 0) expect(p[i]).toBe(0);
  }
  const dScores = maskedSoftmaxBackward(probs, tensor(c.dProbs, c.shape), { scale: c.scale });
  expect(dScores.shape).toEqual(c.shape);
  checkArray('dScores', dScores.toArray(), c.dScores);
}

function runActivation(c: ActivationCase): void {
  const x = tensor(c.x, c.shape);
  const y = activation(x, c.activation);
  expect(y.shape).toEqual(c.shape);
  checkArray('y', y.toArray(), c.y);
  const dx = activationGrad(x, tensor(c.dy, c.shape), c.activation);
  expect(dx.shape).toEqual(c.shape);
  checkArray('dx', dx.toArray(), c.dx);
}

function runEmbedding(c: EmbeddingCase): void {
  const table = tensor(c.table, [c.V, c.H]);
  const ids = int32(c.ids, c.idsShape);
  const outShape = [...c.idsShape, c.H];
  const out = embedding(table, ids);
  expect(out.shape).toEqual(outShape);
  checkArray('out', out.toArray(), c.out);
  const dTable = embeddingBackward(tensor(c.dOut, outShape), ids, c.V);
  expect(dTable.shape).toEqual([c.V, c.H]);
  checkArray('dTable', dTable.toArray(), c.dTable);
}

function runCrossEntropy(c: CrossEntropyCase): void {
  const logits = tensor(c.logits, [c.B, c.C]);
  const r = softmaxCrossEntropy(logits, int32(c.labels, [c.B]), { ignoreIndex: c.ignoreIndex });
  expect(r.loss.shape).toEqual([1]);
  expect(r.dLogits.shape).toEqual([c.B, c.C]);
  checkArray('loss', r.loss.toArray(), [c.loss]);
  checkArray('dLogits', r.dLogits.toArray(), c.dLogits);
  // ignored rows get exactly zero gradient
  const g = r.dLogits.toArray();
  for (let i = 0; i < c.B; i++)
    if (c.labels[i] === c.ignoreIndex)
      for (let k = 0; k < c.C; k++) expect(g[i * c.C + k]).toBe(0);
}

function runTranspose12(c: Transpose12Case): void {
  const [A, B, C, D] = c.shape;
  const y = transpose12(tensor(c.x, c.shape));
  expect(y.shape).toEqual([A, C, B, D]);
  // a pure permutation of float32 values: exact
  expect(Array.from(y.toArray())).toEqual(Array.from(Float32Array.from(c.y)));
}

describe('nn fixtures (float64 PyTorch reference)', () => {
  test('fixture file names its generator, and the generator exists', () => {
    expect(fixtures.generator).toBe('scripts/gen_nn_fixtures.py');
    expect(fs.existsSync(path.join(ROOT, fixtures.generator))).toBe(true);
    expect(typeof fixtures.torch).toBe('string');
  });

  test('has at least 20 cases, covering every op', () => {
    expect(Array.isArray(fixtures.cases)).toBe(true);
    expect(fixtures.cases.length).toBeGreaterThanOrEqual(20);
    for (const op of OPS) expect(fixtures.cases.some((c) => c.op === op)).toBe(true);
    const acts = new Set(fixtures.cases.flatMap((c) => (c.op === 'activation' ? [c.activation] : [])));
    for (const a of ['relu', 'gelu', 'gelu_tanh', 'silu', 'identity', 'tanh']) expect(acts.has(a as ActivationName)).toBe(true);
    expect(new Set(fixtures.cases.map((c) => c.name)).size).toBe(fixtures.cases.length);
  });

  for (const c of fixtures.cases) {
    test(c.name, () => {
      switch (c.op) {
        case 'layerNorm': return runLayerNorm(c);
        case 'maskedSoftmax': return runMaskedSoftmax(c);
        case 'activation': return runActivation(c);
        case 'embedding': return runEmbedding(c);
        case 'crossEntropy': return runCrossEntropy(c);
        case 'transpose12': return runTranspose12(c);
        default: throw new Error(`unknown op in ${FIXTURE}: ${(c as { op: string }).op}`);
      }
    });
  }
});
