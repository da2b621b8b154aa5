// Every CUDA building block against the CPU op on fresh random inputs, in fp32, bf16 and
// fp16, outputs poisoned (NaN) first, up to full-size shapes (65536 rows, T = 512).
import {
  dropout, dropoutBackward, embedding, embeddingBackward, empty, layerNorm, layerNormBackward, maskedSoftmax,
  maskedSoftmaxBackward, randn, softmaxCrossEntropy, tensor, Tensor, transpose12,
} from '../../lib';
import type { FloatDType } from '../../lib';
import { describeGpu, expectClose } from '../helpers';

const dev = 'cuda:0';
const seed = () => Math.floor(Math.random() * 2 ** 31);
const FLOATS: FloatDType[] = ['float32', 'bfloat16', 'float16'];
const tol = { float32: 1e-5, bfloat16: 1e-2, float16: 2e-3 } as const;

function both(shape: number[], dtype: FloatDType, opts: { std?: number; mean?: number } = {}): [Tensor, Tensor] {
  const c = randn(shape, { seed: seed(), dtype, ...opts });
  return [c, c.to(dev)];
}

function ids(values: Int32Array, shape: number[]): [Tensor, Tensor] {
  const c = tensor(values, shape, { dtype: 'int32' });
  return [c, c.to(dev)];
}

function randomInts(n: number, lo: number, hi: number): Int32Array {
  return Int32Array.from({ length: n }, () => lo + Math.floor(Math.random() * (hi - lo)));
}

/**
 * Leaves NaN-filled blocks of these sizes in the device allocator's cache at the same time,
 * so that the next allocations of those sizes (an op's outputs) start poisoned.
 */
function poison(...specs: [number[], FloatDType][]): void {
  const ts = specs.map(([shape, dtype]) => {
    const t = empty(shape, { dtype, device: dev });
    t.copyFrom(new Float32Array(t.size).fill(NaN));
    return t;
  });
  for (const t of ts) t.dispose();
}

/** Equal values (NaN never equal), reporting the first difference. */
function expectSame(actual: Float32Array, expected: Float32Array): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++)
    if (actual[i] !== expected[i]) throw new Error(`element ${i}: got ${actual[i]}, expected ${expected[i]}`);
}

const rowsOf = (shape: number[]) => shape.slice(0, -1);

describeGpu('CUDA nn ops match the CPU', () => {
  describe('layerNorm', () => {
    const shapes = [[1, 1], [3, 7], [1000, 768], [65536, 256], [17, 4099], [4, 128, 1024]];
    for (const dtype of FLOATS)
      for (const shape of shapes)
        test(`forward and backward ${dtype} ${JSON.stringify(shape)}`, () => {
          const H = shape[shape.length - 1];
          const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
          const withRes = rows % 2 === 1 || rows === 65536;
          const [x, xd] = both(shape, dtype, { std: 2, mean: 0.3 });
          const [res, resd] = withRes ? both(shape, dtype) : [undefined, undefined];
          const [w, wd] = both([H], dtype, { mean: 1, std: 0.3 });
          const [b, bd] = both([H], dtype);
          const [dOut, dOutd] = both(shape, dtype);
          const eps = dtype === 'float32' ? 1e-12 : 1e-5;

          poison([shape, dtype], [rowsOf(shape), 'float32'], [rowsOf(shape), 'float32']);
          const g = layerNorm(xd, wd, bd, { eps, residual: resd });
          const c = layerNorm(x, w, b, { eps, residual: res });
          expect(g.out.device).toBe(dev);
          expectClose(g.out.toArray(), c.out.toArray(), tol[dtype], tol[dtype]);
          expectClose(g.mean.toArray(), c.mean.toArray(), 1e-5, 1e-6);
          expectClose(g.rstd.toArray(), c.rstd.toArray(), 1e-5, 1e-6);

          // backward from the same (CPU) statistics on both sides
          const mean = c.mean.to(dev);
          const rstd = c.rstd.to(dev);
          poison([shape, dtype], [[H], 'float32'], [[H], 'float32']);
          const gb = layerNormBackward(dOutd, xd, resd, wd, mean, rstd);
          const cb = layerNormBackward(dOut, x, res, w, c.mean, c.rstd);
          expectClose(gb.dx.toArray(), cb.dx.toArray(), tol[dtype], 10 * tol[dtype]);
          const atol = 1e-5 * Math.sqrt(rows);
          expectClose(gb.dWeight.toArray(), cb.dWeight.toArray(), 1e-4, atol);
          expectClose(gb.dBias.toArray(), cb.dBias.toArray(), 1e-4, atol);
          // deterministic: a second run gives the same bits
          const again = layerNormBackward(dOutd, xd, resd, wd, mean, rstd);
          expectSame(again.dWeight.toArray(), gb.dWeight.toArray());
          expectSame(again.dBias.toArray(), gb.dBias.toArray());
          expectSame(again.dx.toArray(), gb.dx.toArray());
        });
  });

  describe('maskedSoftmax', () => {
    const cases: { shape: number[]; mask: boolean }[] = [
      { shape: [1, 1, 1, 1], mask: true },
      { shape: [2, 12, 512, 512], mask: true },
      { shape: [4, 4, 37, 1000], mask: false },
      { shape: [2, 2, 3, 4099], mask: true },
      { shape: [300, 77], mask: false },
    ];
    for (const dtype of FLOATS)
      for (const { shape, mask } of cases)
        test(`forward and backward ${dtype} ${JSON.stringify(shape)}${mask ? ' with a key mask' : ''}`, () => {
          const scale = 0.125 + Math.random();
          const [s, sd] = both(shape, dtype, { std: 3 });
          let maskArr: Float32Array | undefined;
          let keyMask: Tensor | undefined;
          let keyMaskD: Tensor | undefined;
          if (mask) {
            const [B, Tk] = [shape[0], shape[3]];
            maskArr = Float32Array.from({ length: B * Tk }, () => (Math.random() < 0.25 ? 0 : 1));
            if (B > 1) maskArr.fill(0, Tk, 2 * Tk);  // batch 1: every key masked
            keyMask = tensor(maskArr, [B, Tk]);
            keyMaskD = keyMask.to(dev);
          }
          poison([shape, dtype]);
          const g = maskedSoftmax(sd, { scale, keyMask: keyMaskD }).toArray();
          const c = maskedSoftmax(s, { scale, keyMask }).toArray();
          expectClose(g, c, tol[dtype], tol[dtype] * 1e-2);
          if (maskArr) {
            const [NH, Tq, Tk] = [shape[1], shape[2], shape[3]];
            for (let i = 0; i < g.length; i++)
              if (maskArr[Math.floor(i / (NH * Tq * Tk)) * Tk + (i % Tk)] === 0 && g[i] !== 0)
                throw new Error(`masked element ${i} is ${g[i]}, not 0`);
          }

          const probs = maskedSoftmax(s, { scale, keyMask });
          const probsD = probs.to(dev);
          const [dP, dPd] = both(shape, dtype);
          poison([shape, dtype]);
          const gb = maskedSoftmaxBackward(probsD, dPd, { scale }).toArray();
          const cb = maskedSoftmaxBackward(probs, dP, { scale }).toArray();
          expectClose(gb, cb, tol[dtype], tol[dtype] * 0.1);
        });
  });

  test('maskedSoftmax: NaN and +Infinity scores give the CPU op\'s NaN pattern (rows of NaN too)', () => {
    const [B, NH, Tq, Tk] = [3, 2, 4, 70];
    const a = Float32Array.from({ length: B * NH * Tq * Tk }, () => Math.random() * 6 - 3);
    a.fill(NaN, 0, Tk);                   // a row of NaN
    a[Tk + 40] = NaN;                     // one NaN, in the second lane's elements
    a[5 * Tk + 3] = Infinity;             // one +Infinity
    a[6 * Tk + 1] = a[6 * Tk + 65] = Infinity;
    const maskArr = Float32Array.from({ length: B * Tk }, (_, i) => (i % 7 === 3 ? 0 : 1));
    const keyMask = tensor(maskArr, [B, Tk]);
    for (const dtype of FLOATS) {
      const s = tensor(a, [B, NH, Tq, Tk], { dtype });
      poison([[B, NH, Tq, Tk], dtype]);
      const g = Array.from(maskedSoftmax(s.to(dev), { keyMask: keyMask.to(dev) }).toArray());
      const c = Array.from(maskedSoftmax(s, { keyMask }).toArray());
      expect(g.map(Number.isNaN)).toEqual(c.map(Number.isNaN));
      expect(c.slice(0, Tk).filter(Number.isNaN).length).toBe(Tk - maskArr.subarray(0, Tk).filter((m) => m === 0).length);
      expectClose(g.map((v) => (Number.isNaN(v) ? 0 : v)), c.map((v) => (Number.isNaN(v) ? 0 : v)), tol[dtype], tol[dtype] * 1e-2);
    }
  });

  describe('transpose12', () => {
    const shapes = [[1, 1, 1, 1], [2, 512, 12, 64], [3, 5, 7, 3], [2, 12, 512, 64], [4, 33, 2, 130]];
    for (const dtype of [...FLOATS, 'int32'] as const)
      for (const shape of shapes)
        test(`${dtype} ${JSON.stringify(shape)}`, () => {
          const n = shape.reduce((a, b) => a * b, 1);
          const c = dtype === 'int32' ? tensor(randomInts(n, -1e6, 1e6), shape, { dtype }) : randn(shape, { seed: seed(), dtype });
          const d = c.to(dev);
          // an int32 output takes a block of the float32 size
          poison([[shape[0], shape[2], shape[1], shape[3]], dtype === 'int32' ? 'float32' : dtype]);
          const g = transpose12(d);
          expect(g.shape).toEqual([shape[0], shape[2], shape[1], shape[3]]);
          expectSame(g.toArray(), transpose12(c).toArray());
        });
  });

  describe('embedding', () => {
    const cases: { V: number; H: number; idShape: number[] }[] = [
      { V: 1, H: 1, idShape: [1] },
      { V: 30522, H: 768, idShape: [32, 512] },
      { V: 1000, H: 13, idShape: [7, 11] },
      { V: 512, H: 1024, idShape: [65536] },
    ];
    for (const dtype of FLOATS)
      for (const { V, H, idShape } of cases)
        test(`forward and backward ${dtype} V=${V} H=${H} ids ${JSON.stringify(idShape)}`, () => {
          const N = idShape.reduce((a, b) => a * b, 1);
          const [table, tableD] = both([V, H], dtype);
          const idv = randomInts(N, 0, V);
          for (let i = 0; i < N; i += 3) idv[i] = 0;  // a padding id repeated many times
          const [idc, idd] = ids(idv, idShape);
          poison([[...idShape, H], dtype]);
          expectSame(embedding(tableD, idd).toArray(), embedding(table, idc).toArray());

          const [dOut, dOutD] = both([...idShape, H], dtype);
          poison([[V, H], 'float32']);
          const g = embeddingBackward(dOutD, idd, V);
          const c = embeddingBackward(dOut, idc, V);
          expect(g.shape).toEqual([V, H]);
          expectClose(g.toArray(), c.toArray(), 1e-6, 1e-6);
          expectSame(embeddingBackward(dOutD, idd, V).toArray(), g.toArray());  // deterministic
        });

    test('an out-of-range id on CUDA is an error naming the id and the first bad position; the device stays usable', () => {
      const [table, tableD] = both([100, 64], 'bfloat16');
      const idv = randomInts(4 * 500, 0, 100);
      idv[1777] = 100;
      idv[1234] = -5;
      const [, idd] = ids(idv, [4, 500]);
      expect(() => embedding(tableD, idd)).toThrow("embedding: argument 'ids' holds -5 at position 1234 (index [2, 234]), outside [0, 100)");
      const dOutD = randn([4, 500, 64], { device: dev, seed: seed() });
      expect(() => embeddingBackward(dOutD, idd, 100)).toThrow("embeddingBackward: argument 'ids' holds -5 at position 1234 (index [2, 234]), outside [0, 100)");
      idv[1234] = 7;
      const [, idd2] = ids(idv, [4, 500]);
      expect(() => embeddingBackward(dOutD, idd2, 100)).toThrow("embeddingBackward: argument 'ids' holds 100 at position 1777 (index [3, 277]), outside [0, 100)");
      idv[1777] = 99;
      const [idc3, idd3] = ids(idv, [4, 500]);
      expectSame(embedding(tableD, idd3).toArray(), embedding(table, idc3).toArray());
    });
  });

  describe('dropout', () => {
    for (const dtype of FLOATS)
      for (const n of [1, 7, 4 * 12345 + 3, 65536 * 768 + 1])
        test(`forward and backward ${dtype} n=${n}: the same mask as the CPU`, () => {
          const [x, xd] = both([n], dtype);
          const p = 0.05 + 0.5 * Math.random();
          const s = seed() + 2 ** 33;
          poison([[n], dtype]);
          expectSame(dropout(xd, p, s).toArray(), dropout(x, p, s).toArray());
          poison([[n], dtype]);
          expectSame(dropoutBackward(xd, p, s).toArray(), dropoutBackward(x, p, s).toArray());
          poison([[n], dtype]);
          expectSame(dropout(xd, 0, s).toArray(), x.toArray());
        });
  });

  describe('softmaxCrossEntropy', () => {
    const shapes = [[1, 1], [1000, 3], [65536, 2], [7, 4099], [512, 30522]];
    for (const dtype of FLOATS)
      for (const [B, C] of shapes)
        test(`loss and gradient ${dtype} [${B}, ${C}]`, () => {
          const [z, zd] = both([B, C], dtype, { std: 3 });
          const lab = randomInts(B, 0, C);
          for (let i = 1; i < B; i += 10) lab[i] = -100;
          const [lc, ld] = ids(lab, [B]);
          poison([[B, C], dtype], [[1], 'float32']);
          const g = softmaxCrossEntropy(zd, ld);
          const c = softmaxCrossEntropy(z, lc);
          expectClose(g.loss.toArray(), c.loss.toArray(), 1e-5, 1e-6);
          // (softmax − onehot)/count: the label's entry cancels, so the absolute tolerance scales with 1/count;
          // float16 stores the tiny entries of wide rows as subnormals (steps of 6e-8)
          const count = lab.reduce((n, l) => n + (l === -100 ? 0 : 1), 0);
          const atol = { float32: 1e-6 / count, bfloat16: 1e-2 / count, float16: 1e-7 }[dtype];
          expectClose(g.dLogits.toArray(), c.dLogits.toArray(), dtype === 'float32' ? 1e-4 : tol[dtype], atol);
          // every row ignored: loss 0, gradient 0
          const allIgnored = tensor(new Int32Array(B).fill(-100), [B], { dtype: 'int32', device: dev });
          poison([[B, C], dtype], [[1], 'float32']);
          const z0 = softmaxCrossEntropy(zd, allIgnored);
          expect(Array.from(z0.loss.toArray())).toEqual([0]);
          expect(z0.dLogits.toArray().every((v) => v === 0)).toBe(true);
        });

    test('a bad label on CUDA is an error naming it and its position', () => {
      const zd = randn([50, 7], { device: dev, seed: seed() });
      const lab = randomInts(50, 0, 7);
      lab[41] = 7;
      lab[45] = -3;
      expect(() => softmaxCrossEntropy(zd, ids(lab, [50])[1])).toThrow("softmaxCrossEntropy: argument 'labels' holds 7 at position 41, outside [0, 7) and not ignoreIndex -100");
      expect(() => softmaxCrossEntropy(zd, ids(lab, [50])[1], { ignoreIndex: 7 })).toThrow("softmaxCrossEntropy: argument 'labels' holds -3 at position 45, outside [0, 7) and not ignoreIndex 7");
      lab[41] = lab[45] = 0;
      expect(softmaxCrossEntropy(zd, ids(lab, [50])[1]).loss.toArray()[0]).toBeGreaterThan(0);
    });
  });

  test('empty inputs on CUDA: empty outputs, zero gradients, no errors', () => {
    const w = randn([5], { device: dev });
    const f = layerNorm(randn([0, 5], { device: dev }), w, w);
    const g = layerNormBackward(randn([0, 5], { device: dev }), randn([0, 5], { device: dev }), undefined, w, f.mean, f.rstd);
    expect(Array.from(g.dWeight.toArray())).toEqual([0, 0, 0, 0, 0]);
    expect(Array.from(g.dBias.toArray())).toEqual([0, 0, 0, 0, 0]);
    expect(maskedSoftmax(randn([2, 1, 3, 0], { device: dev }), { keyMask: randn([2, 0], { device: dev }) }).shape).toEqual([2, 1, 3, 0]);
    expect(transpose12(randn([2, 0, 3, 4], { device: dev })).shape).toEqual([2, 3, 0, 4]);
    const none = tensor([], [0], { dtype: 'int32', device: dev });
    expect(embedding(randn([4, 3], { device: dev }), none).shape).toEqual([0, 3]);
    expect(Array.from(embeddingBackward(randn([0, 3], { device: dev }), none, 2).toArray())).toEqual([0, 0, 0, 0, 0, 0]);
    expect(dropout(randn([0], { device: dev }), 0.5, 1).shape).toEqual([0]);
    expect(Array.from(softmaxCrossEntropy(randn([0, 3], { device: dev }), none).loss.toArray())).toEqual([0]);
  });

  test('device mixes are errors naming the op and the argument', () => {
    const xd = randn([4, 8], { device: dev });
    const w = randn([8]);
    expect(() => layerNorm(xd, w, w.to(dev))).toThrow("layerNorm: argument 'weight' is on cpu but 'x' is on cuda:0");
    expect(() => layerNorm(xd, w.to(dev), w.to(dev), { residual: randn([4, 8]) })).toThrow("layerNorm: argument 'residual' is on cpu but 'x' is on cuda:0");
    const f = layerNorm(xd, w.to(dev), w.to(dev));
    expect(() => layerNormBackward(xd, xd, undefined, w.to(dev), f.mean.to('cpu'), f.rstd)).toThrow("layerNormBackward: argument 'mean' is on cpu but 'x' is on cuda:0");
    const sd = randn([2, 1, 3, 8], { device: dev });
    expect(() => maskedSoftmax(sd, { keyMask: randn([2, 8]) })).toThrow("maskedSoftmax: argument 'keyMask' is on cpu but 'scores' is on cuda:0");
    expect(() => maskedSoftmaxBackward(sd, randn([2, 1, 3, 8]))).toThrow("maskedSoftmaxBackward: argument 'dProbs' is on cpu but 'probs' is on cuda:0");
    const idc = tensor([1, 2], [2], { dtype: 'int32' });
    expect(() => embedding(randn([5, 8], { device: dev }), idc)).toThrow("embedding: argument 'ids' is on cpu but 'table' is on cuda:0");
    expect(() => embeddingBackward(randn([2, 8], { device: dev }), idc, 5)).toThrow("embeddingBackward: argument 'ids' is on cpu but 'dOut' is on cuda:0");
    expect(() => softmaxCrossEntropy(randn([2, 8], { device: dev }), idc)).toThrow("softmaxCrossEntropy: argument 'labels' is on cpu but 'logits' is on cuda:0");
  });
});
