// The transformer building blocks on the CPU against float64 references written here,
// on fresh random inputs (the seed is in each suite's name), plus bad-input cases.
import {
  activation, activationGrad, dropout, dropoutBackward, embedding, embeddingBackward, layerNorm, layerNormBackward,
  maskedSoftmax, maskedSoftmaxBackward, randn, softmaxCrossEntropy, tensor, transpose12,
} from '../lib';
import { expectClose, rng } from './helpers';

const SEED = Math.floor(Math.random() * 2 ** 31);
const r = rng(SEED);
const seed = () => Math.floor(r.uniform() * 2 ** 31);
type Float = 'float32' | 'bfloat16' | 'float16';
const FLOATS: Float[] = ['float32', 'bfloat16', 'float16'];
/** Tolerance of a result stored in dtype (rounded once from fp32). */
const tol: Record<Float, number> = { float32: 1e-5, bfloat16: 1e-2, float16: 2e-3 };

const randInt = (n: number) => Math.floor(r.uniform() * n);
const ints = (n: number, lo: number, hi: number) => Int32Array.from({ length: n }, () => lo + randInt(hi - lo));
const idsTensor = (values: ArrayLike<number>, shape: number[]) => tensor(values, shape, { dtype: 'int32' });

// ---- float64 references ----

function refLayerNorm(x: ArrayLike<number>, res: ArrayLike<number> | null, w: ArrayLike<number>, b: ArrayLike<number>,
  rows: number, H: number, eps: number) {
  const out = new Float64Array(rows * H);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    const v = Array.from({ length: H }, (_, c) => x[i * H + c] + (res ? res[i * H + c] : 0));
    const mu = v.reduce((s, a) => s + a, 0) / H;
    const vr = v.reduce((s, a) => s + (a - mu) ** 2, 0) / H;
    const rs = 1 / Math.sqrt(vr + eps);
    for (let c = 0; c < H; c++) out[i * H + c] = (v[c] - mu) * rs * w[c] + b[c];
    mean[i] = mu;
    rstd[i] = rs;
  }
  return { out, mean, rstd };
}

function refLayerNormBackward(dOut: ArrayLike<number>, x: ArrayLike<number>, res: ArrayLike<number> | null,
  w: ArrayLike<number>, rows: number, H: number, eps: number) {
  const { mean, rstd } = refLayerNorm(x, res, w, new Float64Array(H), rows, H, eps);
  const dx = new Float64Array(rows * H);
  const dW = new Float64Array(H);
  const dB = new Float64Array(H);
  for (let i = 0; i < rows; i++) {
    const xh = Array.from({ length: H }, (_, c) => (x[i * H + c] + (res ? res[i * H + c] : 0) - mean[i]) * rstd[i]);
    const g = Array.from({ length: H }, (_, c) => dOut[i * H + c] * w[c]);
    const a = g.reduce((s, v) => s + v, 0) / H;
    const bb = g.reduce((s, v, c) => s + v * xh[c], 0) / H;
    for (let c = 0; c < H; c++) {
      dx[i * H + c] = rstd[i] * (g[c] - a - xh[c] * bb);
      dW[c] += dOut[i * H + c] * xh[c];
      dB[c] += dOut[i * H + c];
    }
  }
  return { dx, dW, dB };
}

function refSoftmax(s: ArrayLike<number>, mask: ArrayLike<number> | null, rows: number, Tk: number,
  rowsPerBatch: number, scale: number): Float64Array {
  const p = new Float64Array(rows * Tk);
  for (let i = 0; i < rows; i++) {
    const on = (k: number) => !mask || mask[Math.floor(i / rowsPerBatch) * Tk + k] !== 0;
    let mx = -Infinity;
    for (let k = 0; k < Tk; k++) if (on(k)) mx = Math.max(mx, scale * s[i * Tk + k]);
    if (mx === -Infinity) continue;
    let sum = 0;
    for (let k = 0; k < Tk; k++) if (on(k)) sum += Math.exp(scale * s[i * Tk + k] - mx);
    for (let k = 0; k < Tk; k++) p[i * Tk + k] = on(k) ? Math.exp(scale * s[i * Tk + k] - mx) / sum : 0;
  }
  return p;
}

function refCrossEntropy(z: ArrayLike<number>, labels: ArrayLike<number>, B: number, C: number, ignore: number) {
  const grad = new Float64Array(B * C);
  let count = 0;
  for (let i = 0; i < B; i++) count += labels[i] !== ignore ? 1 : 0;
  let total = 0;
  for (let i = 0; i < B; i++) {
    if (labels[i] === ignore) continue;
    let mx = -Infinity;
    for (let c = 0; c < C; c++) mx = Math.max(mx, z[i * C + c]);
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(z[i * C + c] - mx);
    total += Math.log(sum) + mx - z[i * C + labels[i]];
    for (let c = 0; c < C; c++) grad[i * C + c] = (Math.exp(z[i * C + c] - mx) / sum - (c === labels[i] ? 1 : 0)) / count;
  }
  return { loss: count ? total / count : 0, grad };
}

// Philox4x32-10 (Salmon et al., SC'11), written out again here in BigInt arithmetic.
function philox4x32(counter: number[], key: number[]): number[] {
  const mulhilo = (a: number, b: number): [number, number] => {
    const p = BigInt(a) * BigInt(b);
    return [Number(p & 0xffffffffn), Number(p >> 32n)];
  };
  let [c0, c1, c2, c3] = counter;
  let [k0, k1] = key;
  for (let round = 0; round < 10; round++) {
    const [lo0, hi0] = mulhilo(0xd2511f53, c0);
    const [lo1, hi1] = mulhilo(0xcd9e8d57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** The dropout factor of element i: 1/(1-p) when word i of stream (seed, 1) ≥ ⌊p·2³²⌋, else 0. */
function refDropoutFactors(n: number, p: number, seed: number): Float64Array {
  const s = BigInt(seed);
  const key = [Number(s & 0xffffffffn), Number(s >> 32n)];
  const threshold = Math.min(Math.floor(p * 2 ** 32), 0xffffffff);
  const f = new Float64Array(n);
  for (let blk = 0; blk * 4 < n; blk++) {
    const words = philox4x32([blk, 0, 1, 0], key);
    for (let j = 0; j < 4 && blk * 4 + j < n; j++) f[blk * 4 + j] = words[j] >= threshold ? 1 / (1 - p) : 0;
  }
  return f;
}

// ---- the tests ----

describe(`layerNorm (seed ${SEED})`, () => {
  for (const dtype of FLOATS)
    for (const withRes of [false, true])
      test(`forward ${dtype}${withRes ? ' with residual' : ''} matches float64`, () => {
        const [rows, H] = [2 * 7, 33];
        const eps = dtype === 'float32' ? 1e-12 : 1e-5;
        const x = randn([2, 7, H], { seed: seed(), dtype, std: 2, mean: 0.5 });
        const res = withRes ? randn([2, 7, H], { seed: seed(), dtype }) : undefined;
        const w = randn([H], { seed: seed(), dtype, mean: 1, std: 0.3 });
        const b = randn([H], { seed: seed(), dtype });
        const ln = layerNorm(x, w, b, { eps, residual: res });
        expect(ln.out.shape).toEqual([2, 7, H]);
        expect(ln.out.dtype).toBe(dtype);
        expect(ln.mean.shape).toEqual([2, 7]);
        expect(ln.mean.dtype).toBe('float32');
        expect(ln.rstd.dtype).toBe('float32');
        const ref = refLayerNorm(x.toArray(), res ? res.toArray() : null, w.toArray(), b.toArray(), rows, H, eps);
        expectClose(ln.out.toArray(), ref.out, tol[dtype], tol[dtype]);
        expectClose(ln.mean.toArray(), ref.mean, 1e-5, 1e-6);
        expectClose(ln.rstd.toArray(), ref.rstd, 1e-5, 1e-6);
      });

  test('the default eps is 1e-12', () => {
    const x = randn([3, 8], { seed: seed() });
    const w = randn([8], { seed: seed() });
    const b = randn([8], { seed: seed() });
    const ref = refLayerNorm(x.toArray(), null, w.toArray(), b.toArray(), 3, 8, 1e-12);
    expectClose(layerNorm(x, w, b).rstd.toArray(), ref.rstd, 1e-6, 1e-7);
    // a constant row: the variance is 0 and rstd = 1/sqrt(eps)
    const c = layerNorm(tensor(new Float32Array(8).fill(3), [1, 8]), w, b, { eps: 1e-4 });
    expectClose(c.rstd.toArray(), [100], 1e-6);
    expectClose(c.out.toArray(), b.toArray(), 1e-6);
  });

  for (const dtype of FLOATS)
    for (const withRes of [false, true])
      test(`backward ${dtype}${withRes ? ' with residual' : ''} matches float64`, () => {
        const [rows, H] = [3 * 5, 47];
        const eps = 1e-5;
        const x = randn([3, 5, H], { seed: seed(), dtype, std: 1.5 });
        const res = withRes ? randn([3, 5, H], { seed: seed(), dtype }) : undefined;
        const w = randn([H], { seed: seed(), dtype, mean: 1, std: 0.5 });
        const b = randn([H], { seed: seed(), dtype });
        const dOut = randn([3, 5, H], { seed: seed(), dtype });
        const fwd = layerNorm(x, w, b, { eps, residual: res });
        const g = layerNormBackward(dOut, x, res, w, fwd.mean, fwd.rstd);
        expect(g.dx.dtype).toBe(dtype);
        expect(g.dx.shape).toEqual([3, 5, H]);
        expect(g.dWeight.dtype).toBe('float32');
        expect(g.dBias.shape).toEqual([H]);
        const ref = refLayerNormBackward(dOut.toArray(), x.toArray(), res ? res.toArray() : null, w.toArray(), rows, H, eps);
        expectClose(g.dx.toArray(), ref.dx, tol[dtype], tol[dtype]);
        expectClose(g.dWeight.toArray(), ref.dW, 1e-5, 1e-5);
        expectClose(g.dBias.toArray(), ref.dB, 1e-5, 1e-5);
      });

  test('backward agrees with central differences of Σ dOut·LayerNorm(x + residual)', () => {
    const [rows, H, eps] = [3, 6, 1e-5];
    const x = randn([rows, H], { seed: seed() });
    const res = randn([rows, H], { seed: seed() });
    const w = randn([H], { seed: seed(), mean: 1, std: 0.5 });
    const b = randn([H], { seed: seed() });
    const dOut = randn([rows, H], { seed: seed() });
    const [X, R, W, Bv, D] = [x, res, w, b, dOut].map((t) => Float64Array.from(t.toArray()));
    const loss = () => refLayerNorm(X, R, W, Bv, rows, H, eps).out.reduce((s, v, i) => s + v * D[i], 0);
    const numeric = (v: Float64Array) => Array.from(v, (_, i) => {
      const h = 1e-6;
      const keep = v[i];
      v[i] = keep + h;
      const up = loss();
      v[i] = keep - h;
      const down = loss();
      v[i] = keep;
      return (up - down) / (2 * h);
    });
    const fwd = layerNorm(x, w, b, { eps, residual: res });
    const g = layerNormBackward(dOut, x, res, w, fwd.mean, fwd.rstd);
    const dx = g.dx.toArray();
    expectClose(dx, numeric(X), 1e-4, 1e-5);
    expectClose(dx, numeric(R), 1e-4, 1e-5);  // the residual gets the same gradient
    expectClose(g.dWeight.toArray(), numeric(W), 1e-4, 1e-5);
    expectClose(g.dBias.toArray(), numeric(Bv), 1e-4, 1e-5);
  });

  test('bad inputs name the op and the argument', () => {
    const x = randn([4, 5], { seed: seed() });
    const w = randn([5], { seed: seed() });
    const b = randn([5], { seed: seed() });
    expect(() => layerNorm(42 as never, w, b)).toThrow("layerNorm: argument 'x' must be a Tensor");
    expect(() => layerNorm(idsTensor([1, 2], [2]), w, b)).toThrow("layerNorm: argument 'x' must be a floating-point tensor");
    expect(() => layerNorm(randn([4, 0]), w, b)).toThrow(/layerNorm: argument 'x' must have a last dimension of at least 1/);
    expect(() => layerNorm(tensor([1], []), w, b)).toThrow(/layerNorm: argument 'x' must be \[\.\.\., H\]/);
    expect(() => layerNorm(x, randn([4]), b)).toThrow("layerNorm: argument 'weight' has shape [4], expected [5]");
    expect(() => layerNorm(x, w, randn([5], { dtype: 'bfloat16' }))).toThrow("layerNorm: argument 'bias' is bfloat16 but 'x' is float32");
    expect(() => layerNorm(x, w, b, { residual: randn([5, 4]) })).toThrow("layerNorm: argument 'residual' has shape [5, 4], expected [4, 5]");
    expect(() => layerNorm(x, w, b, { residual: randn([4, 5], { dtype: 'float16' }) })).toThrow("layerNorm: argument 'residual' is float16 but 'x' is float32");
    for (const eps of [0, -1e-5])
      expect(() => layerNorm(x, w, b, { eps })).toThrow(/layerNorm: argument 'eps' must be positive/);
    for (const eps of [NaN, Infinity])
      expect(() => layerNorm(x, w, b, { eps })).toThrow(/layerNorm: argument 'eps' must be finite/);
    expect(() => layerNorm(x, w, b, { eps: '1e-5' as never })).toThrow("layerNorm: argument 'eps' must be a number");
    const gone = randn([4, 5]);
    gone.dispose();
    expect(() => layerNorm(gone, w, b)).toThrow("layerNorm: argument 'x' is a disposed tensor");
  });

  test('backward bad inputs name the op and the argument', () => {
    const x = randn([4, 5], { seed: seed() });
    const w = randn([5], { seed: seed() });
    const f = layerNorm(x, w, randn([5]));
    const d = randn([4, 5], { seed: seed() });
    expect(() => layerNormBackward(randn([4, 6]), x, undefined, w, f.mean, f.rstd)).toThrow("layerNormBackward: argument 'dOut' has shape [4, 6], expected [4, 5]");
    expect(() => layerNormBackward(d.to({ dtype: 'bfloat16' }), x, undefined, w, f.mean, f.rstd)).toThrow("layerNormBackward: argument 'dOut' is bfloat16 but 'x' is float32");
    expect(() => layerNormBackward(d, x, randn([4, 5], { dtype: 'float16' }), w, f.mean, f.rstd)).toThrow("layerNormBackward: argument 'residual' is float16 but 'x' is float32");
    expect(() => layerNormBackward(d, x, undefined, randn([6]), f.mean, f.rstd)).toThrow("layerNormBackward: argument 'weight' has shape [6], expected [5]");
    expect(() => layerNormBackward(d, x, undefined, w, f.mean.to({ dtype: 'bfloat16' }), f.rstd)).toThrow("layerNormBackward: argument 'mean' must be float32 (from layerNorm), got bfloat16");
    expect(() => layerNormBackward(d, x, undefined, w, f.mean, randn([5]))).toThrow("layerNormBackward: argument 'rstd' has shape [5], expected [4]");
    expect(() => layerNormBackward(d, x, undefined, w, f.mean, 'rstd' as never)).toThrow("layerNormBackward: argument 'rstd' must be a Tensor");
  });
});

describe(`maskedSoftmax (seed ${SEED})`, () => {
  for (const dtype of FLOATS)
    test(`forward ${dtype} with a key mask: masked keys are exactly 0, an all-masked row is all 0`, () => {
      const [B, NH, Tq, Tk] = [3, 2, 4, 9];
      const scale = 0.3 + r.uniform();
      const s = randn([B, NH, Tq, Tk], { seed: seed(), dtype, std: 3 });
      const maskArr = Float32Array.from({ length: B * Tk }, () => (r.uniform() < 0.3 ? 0 : 1));
      maskArr[0] = 1;
      maskArr.fill(0, Tk, 2 * Tk);  // batch 1 has no key left
      const p = maskedSoftmax(s, { scale, keyMask: tensor(maskArr, [B, Tk]) });
      expect(p.dtype).toBe(dtype);
      expect(p.shape).toEqual([B, NH, Tq, Tk]);
      const out = p.toArray();
      const ref = refSoftmax(s.toArray(), maskArr, B * NH * Tq, Tk, NH * Tq, scale);
      expectClose(out, ref, tol[dtype], 1e-6);
      for (let i = 0; i < out.length; i++) {
        const bIdx = Math.floor(i / (NH * Tq * Tk));
        if (maskArr[bIdx * Tk + (i % Tk)] === 0) expect(out[i]).toBe(0);
      }
      // the same mask as int32 or bfloat16 gives the same probabilities
      for (const mdt of ['int32', 'bfloat16'] as const)
        expect(Array.from(maskedSoftmax(s, { scale, keyMask: tensor(maskArr, [B, Tk], { dtype: mdt }) }).toArray())).toEqual(Array.from(out));
    });

  test('NaN scores give NaN probabilities, as in PyTorch (a row of NaN is not a row with nothing to attend to); masked keys stay 0', () => {
    const [B, Tk] = [2, 5];
    const s = Float32Array.from({ length: B * 2 * Tk }, () => r.normal());
    s.fill(NaN, 0, Tk);          // batch 0, row 0: every score NaN
    s[Tk + 2] = NaN;             // batch 0, row 1: one NaN
    s[3 * Tk + 1] = Infinity;    // batch 1, row 1: +Infinity (exp(inf - inf) is NaN in PyTorch too)
    const mask = tensor([1, 1, 1, 1, 0, 1, 1, 1, 0, 1], [B, Tk]);
    const p = maskedSoftmax(tensor(s, [B, 1, 2, Tk]), { keyMask: mask }).toArray();
    const row = (i: number) => Array.from(p.subarray(i * Tk, (i + 1) * Tk));
    expect(row(0)).toEqual([NaN, NaN, NaN, NaN, 0]);
    expect(row(1)).toEqual([NaN, NaN, NaN, NaN, 0]);
    expect(row(2).every(Number.isFinite)).toBe(true);
    expect(row(3)[1]).toBeNaN();
    expect(row(3)[3]).toBe(0);
  });

  test('without a mask: any rank, softmax over the last dimension, default scale 1', () => {
    for (const shape of [[1, 1], [7, 33], [2, 3, 130], [513]]) {
      const s = randn(shape, { seed: seed(), std: 4 });
      const Tk = shape[shape.length - 1];
      const rows = s.size / Tk;
      expectClose(maskedSoftmax(s).toArray(), refSoftmax(s.toArray(), null, rows, Tk, 1, 1), 1e-5, 1e-7);
    }
  });

  for (const dtype of FLOATS)
    test(`backward ${dtype} matches float64`, () => {
      const [rows, Tk] = [2 * 3 * 5, 17];
      const scale = 0.5 + r.uniform();
      const probs = maskedSoftmax(randn([2, 3, 5, Tk], { seed: seed(), dtype }));
      const dProbs = randn([2, 3, 5, Tk], { seed: seed(), dtype });
      const g = maskedSoftmaxBackward(probs, dProbs, { scale });
      expect(g.dtype).toBe(dtype);
      const P = probs.toArray();
      const D = dProbs.toArray();
      const ref = new Float64Array(rows * Tk);
      for (let i = 0; i < rows; i++) {
        let dot = 0;
        for (let k = 0; k < Tk; k++) dot += P[i * Tk + k] * D[i * Tk + k];
        for (let k = 0; k < Tk; k++) ref[i * Tk + k] = scale * P[i * Tk + k] * (D[i * Tk + k] - dot);
      }
      expectClose(g.toArray(), ref, tol[dtype], tol[dtype] * 0.1);
    });

  test('backward is the gradient of Σ dProbs·softmax(scale·scores) (central differences)', () => {
    const B = 2;
    const scale = 0.7;
    const mask = tensor([1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1], [1, 12]);
    const sFull = randn([1, 1, B, 12], { seed: seed() });
    const dP = randn([1, 1, B, 12], { seed: seed() });
    const S = Float64Array.from(sFull.toArray());
    const M = mask.toArray();
    const DP = dP.toArray();
    const loss = () => refSoftmax(S, M, B, 12, B, scale).reduce((acc, v, i) => acc + v * DP[i], 0);
    const num = Array.from(S, (_, i) => {
      const h = 1e-6;
      const keep = S[i];
      S[i] = keep + h;
      const up = loss();
      S[i] = keep - h;
      const down = loss();
      S[i] = keep;
      return (up - down) / (2 * h);
    });
    const probs = maskedSoftmax(sFull, { scale, keyMask: mask });
    expectClose(maskedSoftmaxBackward(probs, dP, { scale }).toArray(), num, 1e-4, 1e-6);
  });

  test('bad inputs name the op and the argument', () => {
    const s = randn([2, 3, 4, 5], { seed: seed() });
    expect(() => maskedSoftmax(s, { keyMask: randn([2, 4]) })).toThrow("maskedSoftmax: argument 'keyMask' has shape [2, 4], expected [2, 5]");
    expect(() => maskedSoftmax(randn([6, 4, 5]), { keyMask: randn([2, 5]) })).toThrow(/maskedSoftmax: argument 'scores' must be \[B, NH, Tq, Tk\] when a keyMask is given/);
    expect(() => maskedSoftmax(idsTensor([1, 2], [1, 2]))).toThrow("maskedSoftmax: argument 'scores' must be a floating-point tensor");
    expect(() => maskedSoftmax(tensor([1], []))).toThrow(/maskedSoftmax: argument 'scores' must be/);
    for (const scale of [NaN, -Infinity])
      expect(() => maskedSoftmax(s, { scale })).toThrow(/maskedSoftmax: argument 'scale' must be finite/);
    expect(() => maskedSoftmax(s, { keyMask: [1, 0] as never })).toThrow("maskedSoftmax: argument 'keyMask' must be a Tensor");
    const p = maskedSoftmax(s);
    expect(() => maskedSoftmaxBackward(p, randn([2, 3, 4, 6]))).toThrow("maskedSoftmaxBackward: argument 'dProbs' has shape [2, 3, 4, 6], expected [2, 3, 4, 5]");
    expect(() => maskedSoftmaxBackward(p, randn([2, 3, 4, 5], { dtype: 'float16' }))).toThrow("maskedSoftmaxBackward: argument 'dProbs' is float16 but 'probs' is float32");
    expect(() => maskedSoftmaxBackward(p, s, { scale: Infinity })).toThrow(/maskedSoftmaxBackward: argument 'scale' must be finite/);
    expect(() => maskedSoftmaxBackward(undefined as never, s)).toThrow("maskedSoftmaxBackward: argument 'probs' must be a Tensor");
  });
});

describe(`transpose12 (seed ${SEED})`, () => {
  for (const dtype of ['float32', 'bfloat16', 'float16', 'int32'] as const)
    test(`[A, B, C, D] -> [A, C, B, D] ${dtype}`, () => {
      const [A, B, C, D] = [2, 3, 4, 5];
      const n = A * B * C * D;
      const vals = dtype === 'int32' ? ints(n, -1000, 1000) : Float32Array.from(r.array(n));
      const x = tensor(vals, [A, B, C, D], { dtype });
      const xs = x.toArray();
      const y = transpose12(x);
      expect(y.shape).toEqual([A, C, B, D]);
      expect(y.dtype).toBe(dtype);
      const out = y.toArray();
      for (let a = 0; a < A; a++)
        for (let b = 0; b < B; b++)
          for (let c = 0; c < C; c++)
            for (let d = 0; d < D; d++)
              expect(out[((a * C + c) * B + b) * D + d]).toBe(xs[((a * B + b) * C + c) * D + d]);
      // twice is the identity (the head split then the merge)
      expect(Array.from(transpose12(y).toArray())).toEqual(Array.from(xs));
    });

  test('bad inputs name the op and the argument', () => {
    expect(() => transpose12(randn([2, 3, 4]))).toThrow("transpose12: argument 'x' must be 4-D [A, B, C, D], got shape [2, 3, 4]");
    expect(() => transpose12(null as never)).toThrow("transpose12: argument 'x' must be a Tensor");
  });
});

describe(`embedding (seed ${SEED})`, () => {
  for (const dtype of FLOATS)
    test(`forward ${dtype}: rows of the table by ids of any shape`, () => {
      const [V, H] = [11, 6];
      const table = randn([V, H], { seed: seed(), dtype });
      const ids = ints(2 * 3 * 4, 0, V);
      const out = embedding(table, idsTensor(ids, [2, 3, 4]));
      expect(out.shape).toEqual([2, 3, 4, H]);
      expect(out.dtype).toBe(dtype);
      const T = table.toArray();
      const ref = Array.from({ length: ids.length * H }, (_, i) => T[ids[Math.floor(i / H)] * H + (i % H)]);
      expect(Array.from(out.toArray())).toEqual(ref);
    });

  for (const dtype of FLOATS)
    test(`backward ${dtype}: dOut rows summed into their ids, unused rows 0`, () => {
      const [V, H] = [9, 7];
      const ids = ints(5 * 6, 0, V - 2);  // the last two rows stay unused
      ids[3] = ids[17] = ids[29] = 4;      // repeats
      const dOut = randn([5, 6, H], { seed: seed(), dtype });
      const g = embeddingBackward(dOut, idsTensor(ids, [5, 6]), V);
      expect(g.shape).toEqual([V, H]);
      expect(g.dtype).toBe('float32');
      const D = dOut.toArray();
      const ref = new Float64Array(V * H);
      for (let n = 0; n < ids.length; n++) for (let c = 0; c < H; c++) ref[ids[n] * H + c] += D[n * H + c];
      expectClose(g.toArray(), ref, 1e-5, 1e-6);
      expect(Array.from(g.toArray().subarray((V - 2) * H))).toEqual(new Array(2 * H).fill(0));
    });

  test('an out-of-range id is an error naming the id and its position', () => {
    const table = randn([10, 4], { seed: seed() });
    const ids = ints(6, 0, 9);
    ids[4] = -1;
    expect(() => embedding(table, idsTensor(ids, [2, 3]))).toThrow("embedding: argument 'ids' holds -1 at position 4 (index [1, 1]), outside [0, 10)");
    ids[4] = 3;
    ids[5] = 10;
    expect(() => embedding(table, idsTensor(ids, [6]))).toThrow("embedding: argument 'ids' holds 10 at position 5, outside [0, 10)");
    const dOut = randn([6, 4]);
    expect(() => embeddingBackward(dOut, idsTensor(ids, [6]), 10)).toThrow("embeddingBackward: argument 'ids' holds 10 at position 5, outside [0, 10)");
    ids[5] = 9;
    expect(() => embeddingBackward(dOut, idsTensor(ids, [6]), 9)).toThrow("embeddingBackward: argument 'ids' holds 9 at position 5, outside [0, 9)");
  });

  test('bad inputs name the op and the argument', () => {
    const table = randn([10, 4], { seed: seed() });
    const ids = idsTensor([1, 2, 3], [3]);
    expect(() => embedding(table, randn([3]))).toThrow("embedding: argument 'ids' must be an int32 tensor, got float32");
    expect(() => embedding(idsTensor([1, 2], [1, 2]), ids)).toThrow("embedding: argument 'table' must be a floating-point tensor");
    expect(() => embedding(randn([10]), ids)).toThrow("embedding: argument 'table' must be 2-D [V, H], got shape [10]");
    expect(() => embedding(table, 3 as never)).toThrow("embedding: argument 'ids' must be a Tensor");
    const dOut = randn([3, 4]);
    expect(() => embeddingBackward(dOut, idsTensor([1, 2], [2]), 10)).toThrow("embeddingBackward: argument 'ids' has shape [2] but 'dOut' [3, 4] needs [3]");
    expect(() => embeddingBackward(dOut, randn([3]), 10)).toThrow("embeddingBackward: argument 'ids' must be an int32 tensor, got float32");
    expect(() => embeddingBackward(idsTensor([1, 2, 3], [3]), ids, 10)).toThrow("embeddingBackward: argument 'dOut' must be a floating-point tensor");
    for (const v of [0, -3, 1.5, NaN, '10'])
      expect(() => embeddingBackward(dOut, ids, v as never)).toThrow(/embeddingBackward: argument 'numEmbeddings' must be an integer in \[1, 2147483647\]/);
  });
});

describe(`dropout (seed ${SEED})`, () => {
  test('the Philox reference reproduces the Random123 known-answer vectors', () => {
    expect(philox4x32([0, 0, 0, 0], [0, 0])).toEqual([0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    expect(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]))
      .toEqual([0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    expect(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]))
      .toEqual([0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
  });

  for (const dtype of FLOATS)
    test(`forward and backward ${dtype}: the Philox mask, kept elements scaled by 1/(1-p)`, () => {
      const n = 4 * 1000 + 3;  // a tail that is not a whole Philox block
      const p = 0.05 + 0.6 * r.uniform();
      const s = seed() + (r.uniform() < 0.5 ? 2 ** 40 : 0);  // also seeds with a high word
      const x = randn([n], { seed: seed(), dtype });
      const f = refDropoutFactors(n, p, s);
      const X = x.toArray();
      const ref = Array.from(X, (v, i) => v * f[i]);
      const y = dropout(x, p, s);
      expect(y.dtype).toBe(dtype);
      expectClose(y.toArray(), ref, tol[dtype], 1e-6);
      const yb = dropoutBackward(x.reshape([1, n]), p, s);
      expect(yb.shape).toEqual([1, n]);
      expect(Array.from(yb.toArray())).toEqual(Array.from(y.toArray()));
      const kept = f.reduce((c, v) => c + (v > 0 ? 1 : 0), 0) / n;
      expect(Math.abs(kept - (1 - p))).toBeLessThan(0.05);
    });

  test('p = 0 is the identity; another seed gives another mask', () => {
    const x = randn([3, 333], { seed: seed() });
    expect(Array.from(dropout(x, 0, seed()).toArray())).toEqual(Array.from(x.toArray()));
    const s = seed();
    expect(Array.from(dropout(x, 0.5, s).toArray())).not.toEqual(Array.from(dropout(x, 0.5, s + 1).toArray()));
  });

  test('bad inputs name the op and the argument', () => {
    const x = randn([10], { seed: seed() });
    for (const p of [1, -0.1, 1.5])
      expect(() => dropout(x, p, 1)).toThrow(/dropout: argument 'p' must be in \[0, 1\)/);
    expect(() => dropout(x, NaN, 1)).toThrow("dropout: argument 'p' must be finite, got nan");
    for (const s of [-1, 1.5, 2 ** 60, NaN, '3'])
      expect(() => dropout(x, 0.1, s as never)).toThrow(/dropout: argument 'seed' must be/);
    expect(() => dropout(idsTensor([1], [1]), 0.1, 1)).toThrow("dropout: argument 'x' must be a floating-point tensor");
    expect(() => dropoutBackward(idsTensor([1], [1]), 0.1, 1)).toThrow("dropoutBackward: argument 'dOut' must be a floating-point tensor");
    expect(() => dropoutBackward(x, 1, 1)).toThrow(/dropoutBackward: argument 'p' must be in \[0, 1\)/);
    expect(() => dropoutBackward(x, 0.1, -2)).toThrow(/dropoutBackward: argument 'seed' must be/);
  });
});

describe(`softmaxCrossEntropy (seed ${SEED})`, () => {
  for (const dtype of FLOATS)
    test(`loss and gradient ${dtype} match float64, ignored rows left out`, () => {
      const [B, C] = [13, 10];
      const logits = randn([B, C], { seed: seed(), dtype, std: 3 });
      const labels = ints(B, 0, C);
      labels[2] = labels[7] = -100;
      const res = softmaxCrossEntropy(logits, idsTensor(labels, [B]));
      expect(res.loss.shape).toEqual([1]);
      expect(res.loss.dtype).toBe('float32');
      expect(res.dLogits.dtype).toBe(dtype);
      expect(res.dLogits.shape).toEqual([B, C]);
      const ref = refCrossEntropy(logits.toArray(), labels, B, C, -100);
      expectClose(res.loss.toArray(), [ref.loss], 1e-5, 1e-6);
      expectClose(res.dLogits.toArray(), ref.grad, tol[dtype], tol[dtype] * 0.01);
      const g = res.dLogits.toArray();
      for (const row of [2, 7]) expect(Array.from(g.subarray(row * C, (row + 1) * C))).toEqual(new Array(C).fill(0));
    });

  test('a custom ignoreIndex (even inside [0, C)) and all rows ignored', () => {
    const [B, C] = [9, 4];
    const logits = randn([B, C], { seed: seed() });
    const labels = ints(B, 0, C);
    labels[0] = 2;
    labels[1] = 1;
    const res = softmaxCrossEntropy(logits, idsTensor(labels, [B]), { ignoreIndex: 2 });
    const ref = refCrossEntropy(logits.toArray(), labels, B, C, 2);
    expectClose(res.loss.toArray(), [ref.loss], 1e-5, 1e-6);
    expectClose(res.dLogits.toArray(), ref.grad, 1e-5, 1e-7);
    const none = softmaxCrossEntropy(logits, idsTensor(new Int32Array(B).fill(-1), [B]), { ignoreIndex: -1 });
    expect(Array.from(none.loss.toArray())).toEqual([0]);
    expect(Array.from(none.dLogits.toArray()).every((v) => v === 0)).toBe(true);
  });

  test('the gradient is the derivative of the loss (central differences)', () => {
    const [B, C] = [4, 5];
    const logits = randn([B, C], { seed: seed() });
    const labels = Int32Array.from([1, -100, 4, 0]);
    const Z = Float64Array.from(logits.toArray());
    const num = Array.from(Z, (_, i) => {
      const h = 1e-6;
      const keep = Z[i];
      Z[i] = keep + h;
      const up = refCrossEntropy(Z, labels, B, C, -100).loss;
      Z[i] = keep - h;
      const down = refCrossEntropy(Z, labels, B, C, -100).loss;
      Z[i] = keep;
      return (up - down) / (2 * h);
    });
    expectClose(softmaxCrossEntropy(logits, idsTensor(labels, [B])).dLogits.toArray(), num, 1e-4, 1e-6);
  });

  test('bad inputs name the op and the argument', () => {
    const logits = randn([3, 4], { seed: seed() });
    const labels = idsTensor([0, 3, 1], [3]);
    expect(() => softmaxCrossEntropy(logits, idsTensor([0, 4, 1], [3]))).toThrow("softmaxCrossEntropy: argument 'labels' holds 4 at position 1, outside [0, 4) and not ignoreIndex -100");
    expect(() => softmaxCrossEntropy(logits, idsTensor([0, 1, -1], [3]))).toThrow("softmaxCrossEntropy: argument 'labels' holds -1 at position 2, outside [0, 4) and not ignoreIndex -100");
    expect(() => softmaxCrossEntropy(logits, idsTensor([0, 1, -100], [3]), { ignoreIndex: -1 })).toThrow("softmaxCrossEntropy: argument 'labels' holds -100 at position 2, outside [0, 4) and not ignoreIndex -1");
    expect(() => softmaxCrossEntropy(randn([3, 4, 1]), labels)).toThrow("softmaxCrossEntropy: argument 'logits' must be 2-D [B, C], got shape [3, 4, 1]");
    expect(() => softmaxCrossEntropy(idsTensor([1, 2], [1, 2]), labels)).toThrow("softmaxCrossEntropy: argument 'logits' must be a floating-point tensor");
    expect(() => softmaxCrossEntropy(logits, randn([3]))).toThrow("softmaxCrossEntropy: argument 'labels' must be an int32 tensor, got float32");
    expect(() => softmaxCrossEntropy(logits, idsTensor([0, 1, 2, 3], [4]))).toThrow("softmaxCrossEntropy: argument 'labels' has shape [4], expected [3]");
    for (const ignoreIndex of [0.5, NaN, 2 ** 31])
      expect(() => softmaxCrossEntropy(logits, labels, { ignoreIndex })).toThrow(/softmaxCrossEntropy: argument 'ignoreIndex' must be an integer/);
    expect(() => softmaxCrossEntropy(logits, {} as never)).toThrow("softmaxCrossEntropy: argument 'labels' must be a Tensor");
  });
});

describe('empty inputs', () => {
  test('zero rows or columns give empty outputs and zero gradients, no errors', () => {
    const w = randn([5], { seed: seed() });
    const f = layerNorm(randn([0, 5]), w, w);
    expect(f.out.shape).toEqual([0, 5]);
    const g = layerNormBackward(randn([0, 5]), randn([0, 5]), undefined, w, f.mean, f.rstd);
    expect(Array.from(g.dWeight.toArray())).toEqual([0, 0, 0, 0, 0]);
    expect(Array.from(g.dBias.toArray())).toEqual([0, 0, 0, 0, 0]);
    expect(maskedSoftmax(randn([2, 3, 0, 4]), { keyMask: randn([2, 4]) }).shape).toEqual([2, 3, 0, 4]);
    expect(maskedSoftmax(randn([2, 1, 3, 0]), { keyMask: randn([2, 0]) }).shape).toEqual([2, 1, 3, 0]);
    expect(maskedSoftmaxBackward(randn([3, 0]), randn([3, 0])).shape).toEqual([3, 0]);
    expect(transpose12(randn([2, 0, 3, 4])).shape).toEqual([2, 3, 0, 4]);
    expect(embedding(randn([4, 3]), idsTensor([], [0, 2])).shape).toEqual([0, 2, 3]);
    expect(Array.from(embeddingBackward(randn([0, 3]), idsTensor([], [0]), 2).toArray())).toEqual([0, 0, 0, 0, 0, 0]);
    expect(dropout(randn([0]), 0.5, 1).shape).toEqual([0]);
    const ce = softmaxCrossEntropy(randn([0, 3]), idsTensor([], [0]));
    expect(Array.from(ce.loss.toArray())).toEqual([0]);
    expect(ce.dLogits.shape).toEqual([0, 3]);
  });
});

describe('tanh activation', () => {
  test('forward tanh and gradient 1 - tanh² match float64', () => {
    const x = randn([5, 41], { seed: seed(), std: 2 });
    const dy = randn([5, 41], { seed: seed() });
    const X = x.toArray();
    const DY = dy.toArray();
    expectClose(activation(x, 'tanh').toArray(), Array.from(X, Math.tanh), 1e-6, 1e-7);
    expectClose(activationGrad(x, dy, 'tanh').toArray(), Array.from(X, (v, i) => DY[i] * (1 - Math.tanh(v) ** 2)), 1e-5, 1e-6);
    expect(() => activation(x, 'sigmoid' as never)).toThrow("activation: argument 'activation' must be one of 'relu', 'gelu', 'gelu_tanh', 'silu', 'identity', 'tanh'");
  });
});
