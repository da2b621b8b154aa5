// The decoder building blocks on the CPU against float64 references written here, on fresh
// random inputs (the seed is in each suite's name): RMSNorm, rotary embeddings, causal softmax.
import { attention, attentionBackward, cacheWrite, empty, gatedActivation, gatedActivationBackward, maskedSoftmax, randn, rmsNorm, rmsNormBackward, rope, ropeBackward, tensor } from '../lib';
import { expectClose, rng } from './helpers';

const SEED = Math.floor(Math.random() * 2 ** 31);
const r = rng(SEED);
const seed = () => Math.floor(r.uniform() * 2 ** 31);
type Float = 'float32' | 'bfloat16' | 'float16';
const FLOATS: Float[] = ['float32', 'bfloat16', 'float16'];
const tol: Record<Float, number> = { float32: 1e-5, bfloat16: 1e-2, float16: 2e-3 };
const positionsOf = (n: number, max: number) => Int32Array.from({ length: n }, () => Math.floor(r.uniform() * max));

function refRms(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, H: number, eps: number) {
  const out = new Float64Array(rows * H);
  const rstd = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let c = 0; c < H; c++) ss += x[i * H + c] ** 2;
    rstd[i] = 1 / Math.sqrt(ss / H + eps);
    for (let c = 0; c < H; c++) out[i * H + c] = w[c] * x[i * H + c] * rstd[i];
  }
  return { out, rstd };
}

/** transformers' rotate-half RoPE in float64. */
function refRope(x: ArrayLike<number>, pos: ArrayLike<number>, inv: ArrayLike<number>, tokens: number, heads: number, D: number, sign = 1) {
  const out = Float64Array.from(x);
  const half = inv.length;
  for (let t = 0; t < tokens; t++)
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < half; i++) {
        const a = Math.fround(Math.fround(pos[t]) * inv[i]);
        const c = Math.cos(a);
        const s = sign * Math.sin(a);
        const base = (t * heads + h) * D;
        const u = x[base + i];
        const v = x[base + i + half];
        out[base + i] = u * c - v * s;
        out[base + i + half] = v * c + u * s;
      }
  return out;
}

const invFreqOf = (rot: number, theta: number) => Float32Array.from({ length: rot / 2 }, (_, i) => 1 / theta ** ((2 * i) / rot));

describe(`rmsNorm (seed ${SEED})`, () => {
  for (const dtype of FLOATS)
    test(`forward ${dtype} matches float64, rstd kept`, () => {
      const [rows, H] = [2 * 3 + randInt(5), 5 + randInt(70)];
      const eps = 1e-6 * (1 + r.uniform());
      const x = randn([rows, H], { seed: seed(), dtype, std: 2 });
      const w = randn([H], { seed: seed(), dtype, mean: 1, std: 0.3 });
      const res = rmsNorm(x, w, { eps });
      const ref = refRms(x.toArray(), w.toArray(), rows, H, eps);
      expect(res.out.dtype).toBe(dtype);
      expectClose(res.out.toArray(), ref.out, tol[dtype] * 2, tol[dtype]);
      expectClose(res.rstd.toArray(), ref.rstd, 1e-5);
    });

  test('backward is the gradient of Σ dOut ⊙ rmsNorm(x) (central differences, float64)', () => {
    const [rows, H] = [3, 11];
    const eps = 1e-5;
    const x = randn([rows, H], { seed: seed() });
    const w = randn([H], { seed: seed(), mean: 1, std: 0.2 });
    const dOut = randn([rows, H], { seed: seed() });
    const X = Float64Array.from(x.toArray());
    const W = Float64Array.from(w.toArray());
    const D = dOut.toArray();
    const f = () => refRms(X, W, rows, H, eps).out.reduce((s, v, i) => s + v * D[i], 0);
    const central = (arr: Float64Array) => Array.from(arr, (_, i) => {
      const keep = arr[i];
      arr[i] = keep + 1e-6;
      const up = f();
      arr[i] = keep - 1e-6;
      const down = f();
      arr[i] = keep;
      return (up - down) / 2e-6;
    });
    const g = rmsNormBackward(dOut, x, w, rmsNorm(x, w, { eps }).rstd);
    expectClose(g.dx.toArray(), central(X), 1e-4, 1e-6);
    expectClose(g.dWeight.toArray(), central(W), 1e-4, 1e-6);
  });

  test('bad inputs name the op and the argument', () => {
    const x = randn([2, 4]);
    expect(() => rmsNorm(x, randn([5]))).toThrow("rmsNorm: argument 'weight' has shape [5], expected [4]");
    expect(() => rmsNorm(x, randn([4]), { eps: 0 })).toThrow(/rmsNorm: argument 'eps' must be positive/);
    expect(() => rmsNorm(x, randn([4], { dtype: 'bfloat16' }))).toThrow(/argument 'weight' is bfloat16 but 'x' is float32/);
    expect(() => rmsNormBackward(x, x, randn([4]), randn([3]))).toThrow(/rmsNormBackward: argument 'rstd' has shape \[3\], expected \[2\]/);
  });
});

const randInt = (n: number) => Math.floor(r.uniform() * n);

describe(`rope (seed ${SEED})`, () => {
  for (const dtype of FLOATS)
    test(`forward ${dtype} matches float64 (full and partial rotation, positions up to 8191)`, () => {
      for (const [B, T, heads, D, rot] of [[2, 5, 3, 8, 8], [1, 7, 2, 12, 8], [3, 1, 1, 64, 64]]) {
        const x = randn([B, T, heads, D], { seed: seed(), dtype });
        const pos = positionsOf(B * T, 8192);
        const inv = invFreqOf(rot, 10000);
        const out = rope(x, tensor(pos, [B, T], { dtype: 'int32' }), tensor(inv, [rot / 2]));
        expect(out.shape).toEqual([B, T, heads, D]);
        const ref = refRope(x.toArray(), pos, inv, B * T, heads, D);
        expectClose(out.toArray(), ref, tol[dtype] * 2, tol[dtype] * 2);
      }
    });

  test('backward is the adjoint: <rope(x), y> = <x, ropeBackward(y)>, and it inverts the forward', () => {
    const [T, heads, D] = [9, 4, 16];
    const x = randn([T, heads, D], { seed: seed() });
    const y = randn([T, heads, D], { seed: seed() });
    const pos = tensor(positionsOf(T, 4096), [T], { dtype: 'int32' });
    const inv = tensor(invFreqOf(D, 500000), [D / 2]);
    const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0);
    const lhs = dot(rope(x, pos, inv).toArray(), y.toArray());
    const rhs = dot(x.toArray(), ropeBackward(y, pos, inv).toArray());
    expect(Math.abs(lhs - rhs)).toBeLessThan(1e-4 * (1 + Math.abs(lhs)));
    expectClose(ropeBackward(rope(x, pos, inv), pos, inv).toArray(), x.toArray(), 1e-5, 1e-5);
  });

  test('bad inputs name the op and the argument', () => {
    const x = randn([2, 3, 4]);
    const inv = tensor([1, 0.1], [2]);
    expect(() => rope(randn([4]), tensor([0], [], { dtype: 'int32' }), inv)).toThrow(/rope: argument 'x' must be \[\.\.\., heads, D\]/);
    expect(() => rope(x, tensor([0, 1, 2], [3], { dtype: 'int32' }), inv)).toThrow("rope: argument 'positions' has shape [3], expected [2]");
    expect(() => rope(x, tensor([0, 1], [2]), inv)).toThrow("rope: argument 'positions' must be an int32 tensor, got float32");
    expect(() => rope(x, tensor([0, 1], [2], { dtype: 'int32' }), tensor([1, 1, 1], [3]))).toThrow(/rope: argument 'invFreq' has 3 frequencies; a head of 4 dims rotates at most 2/);
  });
});

describe(`causal maskedSoftmax (seed ${SEED})`, () => {
  test('query q sees keys up to q + Tk − Tq, with a padding mask too', () => {
    for (const [Tq, Tk] of [[5, 5], [3, 7], [1, 4]]) {
      const [B, NH] = [2, 3];
      const s = randn([B, NH, Tq, Tk], { seed: seed(), std: 2 });
      const maskArr = Float32Array.from({ length: B * Tk }, (_, i) => (i === Tk ? 0 : 1)); // batch 1: key 0 is padding
      const p = maskedSoftmax(s, { causal: true, keyMask: tensor(maskArr, [B, Tk]), scale: 0.5 }).toArray();
      const S = s.toArray();
      const ref = new Float64Array(S.length);
      for (let row = 0; row < B * NH * Tq; row++) {
        const b = Math.floor(row / (NH * Tq));
        const q = row % Tq;
        const on = (k: number) => k <= q + Tk - Tq && maskArr[b * Tk + k] !== 0;
        let mx = -Infinity;
        for (let k = 0; k < Tk; k++) if (on(k)) mx = Math.max(mx, 0.5 * S[row * Tk + k]);
        let sum = 0;
        for (let k = 0; k < Tk; k++) if (on(k)) sum += Math.exp(0.5 * S[row * Tk + k] - mx);
        for (let k = 0; k < Tk; k++) ref[row * Tk + k] = on(k) ? Math.exp(0.5 * S[row * Tk + k] - mx) / sum : 0;
      }
      expectClose(p, ref, 1e-5, 1e-7);
      for (let i = 0; i < p.length; i++) if (ref[i] === 0) expect(p[i]).toBe(0);
    }
    expect(() => maskedSoftmax(randn([2, 3]).reshape([1, 1, 3, 2]), { causal: true })).toThrow(/causal attention needs Tq <= Tk/);
  });
});

/** float64 attention: out [B, Hq, Tq, D] for q, k, v flat arrays. */
function refAttention(Q: ArrayLike<number>, K: ArrayLike<number>, V: ArrayLike<number>, mask: ArrayLike<number> | null,
  [B, Hq, Hkv, Tq, Tk, D]: number[], scale: number, causal: boolean): Float64Array {
  const out = new Float64Array(B * Hq * Tq * D);
  const G = Hq / Hkv;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++)
      for (let i = 0; i < Tq; i++) {
        const kv = b * Hkv + Math.floor(h / G);
        const qi = ((b * Hq + h) * Tq + i) * D;
        const sc: number[] = [];
        for (let j = 0; j < Tk; j++) {
          const on = (!causal || j <= i + Tk - Tq) && (!mask || mask[b * Tk + j] !== 0);
          if (!on) { sc.push(-Infinity); continue; }
          let dot = 0;
          for (let d = 0; d < D; d++) dot += Q[qi + d] * K[(kv * Tk + j) * D + d];
          sc.push(scale * dot);
        }
        const mx = Math.max(...sc);
        if (mx === -Infinity) continue;
        const e = sc.map((x) => Math.exp(x - mx));
        const sum = e.reduce((a, c) => a + c, 0);
        for (let j = 0; j < Tk; j++) for (let d = 0; d < D; d++) out[qi + d] += (e[j] / sum) * V[(kv * Tk + j) * D + d];
      }
  return out;
}

describe(`fused attention (seed ${SEED})`, () => {
  const cases = [
    { shape: [2, 4, 2, 5, 5, 8], causal: true, masked: true },
    { shape: [1, 3, 1, 3, 7, 16], causal: true, masked: false },
    { shape: [2, 2, 2, 6, 4, 4], causal: false, masked: true },
  ];
  for (const dtype of FLOATS)
    test(`forward ${dtype} equals float64 softmax(scale·q·kᵀ)·v with causal, padding and grouped heads`, () => {
      for (const { shape, causal, masked } of cases) {
        const [B, Hq, Hkv, Tq, Tk, D] = shape;
        const q = randn([B, Hq, Tq, D], { seed: seed(), dtype });
        const k = randn([B, Hkv, Tk, D], { seed: seed(), dtype });
        const v = randn([B, Hkv, Tk, D], { seed: seed(), dtype });
        const maskArr = masked ? Float32Array.from({ length: B * Tk }, (_, i) => (i % Tk === 0 && i > 0 ? 0 : 1)) : null;
        const scale = 0.2 + r.uniform() * 0.3;
        const res = attention(q, k, v, { scale, causal, keyMask: maskArr ? tensor(maskArr, [B, Tk]) : undefined });
        const ref = refAttention(q.toArray(), k.toArray(), v.toArray(), maskArr, shape, scale, causal);
        expectClose(res.out.toArray(), ref, tol[dtype] * 3, tol[dtype]);
      }
    });

  test('backward: dq, dk, dv are the gradients of Σ dOut ⊙ attention(q, k, v) (central differences, float64)', () => {
    const shape = [1, 4, 2, 4, 5, 3];
    const [B, Hq, Hkv, Tq, Tk, D] = shape;
    const scale = 0.7;
    const maskArr = Float32Array.from({ length: B * Tk }, (_, j) => (j === 1 ? 0 : 1));
    const q = randn([B, Hq, Tq, D], { seed: seed() });
    const k = randn([B, Hkv, Tk, D], { seed: seed() });
    const v = randn([B, Hkv, Tk, D], { seed: seed() });
    const dOut = randn([B, Hq, Tq, D], { seed: seed() });
    const opts = { scale, causal: true, keyMask: tensor(maskArr, [B, Tk]) };
    const fwd = attention(q, k, v, opts);
    const g = attentionBackward(q, k, v, fwd.out, dOut, fwd.lse, opts);
    const Q = Float64Array.from(q.toArray());
    const K = Float64Array.from(k.toArray());
    const V = Float64Array.from(v.toArray());
    const dO = dOut.toArray();
    const f = () => refAttention(Q, K, V, maskArr, shape, scale, true).reduce((a, o, i) => a + o * dO[i], 0);
    const central = (arr: Float64Array) => Array.from(arr, (_, i) => {
      const keep = arr[i];
      arr[i] = keep + 1e-6;
      const up = f();
      arr[i] = keep - 1e-6;
      const down = f();
      arr[i] = keep;
      return (up - down) / 2e-6;
    });
    expectClose(g.dq.toArray(), central(Q), 1e-4, 1e-6);
    expectClose(g.dk.toArray(), central(K), 1e-4, 1e-6);
    expectClose(g.dv.toArray(), central(V), 1e-4, 1e-6);
  });

  test('bad inputs name the op and the argument', () => {
    const q = randn([1, 4, 3, 8]);
    expect(() => attention(q, randn([1, 3, 3, 8]), randn([1, 3, 3, 8]))).toThrow(/attention: the query heads \(4\) must be a multiple of the key\/value heads \(3\)/);
    expect(() => attention(q, randn([1, 2, 3, 4]), randn([1, 2, 3, 4]))).toThrow(/attention: argument 'k' has shape \[1, 2, 3, 4\], which does not match 'q'/);
    expect(() => attention(q, randn([1, 2, 3, 8]), randn([1, 2, 4, 8]))).toThrow(/attention: argument 'v' has shape \[1, 2, 4, 8\], expected \[1, 2, 3, 8\]/);
    expect(() => attention(q, randn([1, 2, 2, 8]), randn([1, 2, 2, 8]), { causal: true })).toThrow(/causal attention needs Tq <= Tk/);
    expect(() => attention(q, randn([1, 2, 3, 8]), randn([1, 2, 3, 8]), { keyMask: randn([1, 4]) })).toThrow("attention: argument 'keyMask' has shape [1, 4], expected [1, 3]");
  });
});

describe(`gatedActivation (seed ${SEED})`, () => {
  const silu = (x: number) => x / (1 + Math.exp(-x));
  const dsilu = (x: number) => { const sg = 1 / (1 + Math.exp(-x)); return sg * (1 + x * (1 - sg)); };
  for (const dtype of FLOATS)
    test(`SwiGLU forward and backward ${dtype} match float64`, () => {
      const shape = [3, 5, 1 + Math.floor(r.uniform() * 40)];
      const g = randn(shape, { seed: seed(), dtype, std: 2 });
      const u = randn(shape, { seed: seed(), dtype });
      const d = randn(shape, { seed: seed(), dtype });
      const G = g.toArray();
      const U = u.toArray();
      const D = d.toArray();
      expectClose(gatedActivation(g, u, 'silu').toArray(), Array.from(G, (x, i) => silu(x) * U[i]), tol[dtype] * 2, tol[dtype]);
      const b = gatedActivationBackward(d, g, u, 'silu');
      expectClose(b.dGate.toArray(), Array.from(G, (x, i) => D[i] * U[i] * dsilu(x)), tol[dtype] * 2, tol[dtype]);
      expectClose(b.dUp.toArray(), Array.from(G, (x, i) => D[i] * silu(x)), tol[dtype] * 2, tol[dtype]);
    });

  test('bad inputs name the op and the argument', () => {
    expect(() => gatedActivation(randn([2, 3]), randn([3, 2]))).toThrow("gatedActivation: argument 'up' has shape [3, 2], expected [2, 3]");
    expect(() => gatedActivation(randn([2]), randn([2]), 'mish' as never)).toThrow(/gatedActivation: unknown activation 'mish'/);
  });
});

describe(`KV cache (seed ${SEED})`, () => {
  test('cacheWrite places rows; attention over the first kvLength rows of a cache equals attention over those rows', () => {
    const [B, Hq, Hkv, Tmax, D] = [2, 4, 2, 9, 8];
    const cacheK = empty([B, Hkv, Tmax, D]);
    const cacheV = empty([B, Hkv, Tmax, D]);
    cacheK.copyFrom(new Float32Array(cacheK.size).fill(NaN)); // unfilled rows must never be read
    cacheV.copyFrom(new Float32Array(cacheV.size).fill(NaN));
    const k1 = randn([B, Hkv, 5, D], { seed: seed() });
    const v1 = randn([B, Hkv, 5, D], { seed: seed() });
    const k2 = randn([B, Hkv, 1, D], { seed: seed() });
    const v2 = randn([B, Hkv, 1, D], { seed: seed() });
    cacheWrite(cacheK, k1, 0);
    cacheWrite(cacheV, v1, 0);
    cacheWrite(cacheK, k2, 5);
    cacheWrite(cacheV, v2, 5);
    // the same 6 keys, contiguous
    const join = (a: Float32Array, b: Float32Array) => {
      const out = new Float32Array(B * Hkv * 6 * D);
      for (let bh = 0; bh < B * Hkv; bh++) {
        out.set(a.subarray(bh * 5 * D, (bh + 1) * 5 * D), bh * 6 * D);
        out.set(b.subarray(bh * D, (bh + 1) * D), bh * 6 * D + 5 * D);
      }
      return out;
    };
    const k = tensor(join(k1.toArray(), k2.toArray()), [B, Hkv, 6, D]);
    const v = tensor(join(v1.toArray(), v2.toArray()), [B, Hkv, 6, D]);
    const q = randn([B, Hq, 1, D], { seed: seed() });
    const maskFull = Float32Array.from({ length: B * Tmax }, (_, i) => (i === Tmax ? 0 : 1)); // batch 1: key 0 is padding
    const maskSix = Float32Array.from({ length: B * 6 }, (_, i) => (i === 6 ? 0 : 1));
    const cached = attention(q, cacheK, cacheV, { causal: true, kvLength: 6, keyMask: tensor(maskFull, [B, Tmax]) });
    const plain = attention(q, k, v, { causal: true, keyMask: tensor(maskSix, [B, 6]) });
    expectClose(cached.out.toArray(), plain.out.toArray(), 1e-6, 1e-7);
    expect(() => cacheWrite(cacheK, k1, 5)).toThrow(/cacheWrite: writing 5 rows at 5 overflows the cache of 9/);
    expect(() => attention(q, cacheK, cacheV, { kvLength: 10 })).toThrow(/argument 'kvLength' must be an integer in \[0, 9\]/);
  });
});
