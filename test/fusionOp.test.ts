// AdapterFusion's attention op on the CPU against a direct float64 reference of native/fusion.h, on
// fresh random inputs: outputs, probabilities and all three gradients; the scores' dropout mask shared
// by forward and backward (the gradient of a dropped score is 0); the gradients against central
// differences of the forward; argument errors.
import { fusionAttention, fusionAttentionBackward, randn, tensor } from '../lib';
import type { FloatDType } from '../lib';
import { expectClose } from './helpers';

const SEED = process.env.FA_TEST_SEED ? Number(process.env.FA_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);

/** float64 reference: out, probs and (given dOut) dq, dk, dv; `keep(n, i)` the dropout mask (scaled). */
function reference(q: Float32Array, k: Float32Array, v: Float32Array, N: number, A: number, H: number, T: number, keep: (n: number, i: number) => number, dOut?: Float32Array) {
  const out = new Float64Array(N * H), probs = new Float64Array(N * A);
  const dq = new Float64Array(N * H), dk = new Float64Array(N * A * H), dv = new Float64Array(N * A * H);
  for (let n = 0; n < N; n++) {
    const s = Array.from({ length: A }, (_, i) => {
      let d = 0;
      for (let c = 0; c < H; c++) d += q[n * H + c] * k[(n * A + i) * H + c];
      return (d * keep(n, i)) / T;
    });
    const top = Math.max(...s);
    const e = s.map((x) => Math.exp(x - top));
    const sum = e.reduce((a, b) => a + b, 0);
    const p = e.map((x) => x / sum);
    p.forEach((x, i) => (probs[n * A + i] = x));
    for (let i = 0; i < A; i++) for (let c = 0; c < H; c++) out[n * H + c] += p[i] * v[(n * A + i) * H + c];
    if (!dOut) continue;
    const g = p.map((_, i) => {
      let d = 0;
      for (let c = 0; c < H; c++) d += dOut[n * H + c] * v[(n * A + i) * H + c];
      return d;
    });
    const pg = p.reduce((a, x, i) => a + x * g[i], 0);
    for (let i = 0; i < A; i++) {
      const ds = ((p[i] * (g[i] - pg)) / T) * keep(n, i);
      for (let c = 0; c < H; c++) {
        dv[(n * A + i) * H + c] = p[i] * dOut[n * H + c];
        dq[n * H + c] += ds * k[(n * A + i) * H + c];
        dk[(n * A + i) * H + c] = ds * q[n * H + c];
      }
    }
  }
  return { out, probs, dq, dk, dv };
}

describe(`fusionAttention on the CPU (seed ${SEED})`, () => {
  const cases: [number, number, number, FloatDType, number][] = [[1, 1, 8, 'float32', 1], [37, 3, 48, 'float32', 50], [64, 5, 33, 'float32', 2.5], [20, 4, 64, 'bfloat16', 1]];
  for (const [N, A, H, dtype, T] of cases)
    test(`N ${N}, ${A} adapters, H ${H}, ${dtype}, T ${T}: outputs, probabilities and gradients`, () => {
      const q = randn([N, H], { seed: SEED, dtype, std: 0.5 });
      const k = randn([N, A, H], { seed: SEED + 1, dtype, std: 0.5 });
      const v = randn([N, A, H], { seed: SEED + 2, dtype });
      const d = randn([N, H], { seed: SEED + 3, dtype });
      const r = fusionAttention(q, k, v, { temperature: T });
      const g = fusionAttentionBackward(d, q, k, v, r.probs, { temperature: T });
      const want = reference(q.toArray(), k.toArray(), v.toArray(), N, A, H, T, () => 1, d.toArray());
      const tol = dtype === 'float32' ? 1e-5 : 2e-2;
      expectClose(r.out.toArray(), want.out, tol, tol);
      expectClose(r.probs.toArray(), want.probs, dtype === 'float32' ? 1e-6 : 1e-2, 1e-6);
      expectClose(g.dq.toArray(), want.dq, tol, tol);
      expectClose(g.dk.toArray(), want.dk, tol, tol);
      expectClose(g.dv.toArray(), want.dv, tol, tol);
    });

  test('dropout on the scores: one mask for forward and backward, dropped scores count as 0, the same seed the same mask', () => {
    const [N, A, H, p] = [200, 4, 16, 0.3];
    const q = randn([N, H], { seed: SEED });
    const k = randn([N, A, H], { seed: SEED + 1 });
    const v = randn([N, A, H], { seed: SEED + 2 });
    const d = randn([N, H], { seed: SEED + 3 });
    const o = { dropout: p, seed: SEED % 1000, temperature: 1.5 };
    const r = fusionAttention(q, k, v, o);
    expect(Array.from(fusionAttention(q, k, v, o).out.toArray())).toEqual(Array.from(r.out.toArray()));
    // recover the mask: with q = e0 and k_i = (i + 1)·e0 the score i is (i + 1)/(1 − p) when kept and 0 when
    // dropped; T·log p_i = s'_i − C for one C per row, which only the true mask explains
    const e0 = (n: number, w: (j: number) => number) => Float32Array.from({ length: n * H }, (_, j) => (j % H === 0 ? w(Math.floor(j / H)) : 0));
    const mp = fusionAttention(tensor(e0(N, () => 1), [N, H]), tensor(e0(N * A, (r) => (r % A) + 1), [N, A, H]), v, o).probs.toArray();
    const mask: number[] = [];
    for (let n = 0; n < N; n++) {
      const L = Array.from({ length: A }, (_, i) => 1.5 * Math.log(mp[n * A + i]));
      const candidates = L.flatMap((l, i) => [(i + 1) / (1 - p) - l, -l]);
      const C = candidates.find((c) => L.every((l, i) => Math.abs(l + c) < 1e-3 || Math.abs(l + c - (i + 1) / (1 - p)) < 1e-3))!;
      expect(C).toBeDefined();
      L.forEach((l, i) => mask.push(Math.abs(l + C) < 1e-3 ? 0 : 1 / (1 - p)));
    }
    const keep = (n: number, i: number) => mask[n * A + i];
    const dropped = mask.filter((m) => m === 0).length / (N * A);
    expect(dropped).toBeGreaterThan(0.2);
    expect(dropped).toBeLessThan(0.4);
    const want = reference(q.toArray(), k.toArray(), v.toArray(), N, A, H, 1.5, keep, d.toArray());
    const got = fusionAttentionBackward(d, q, k, v, r.probs, o);
    expectClose(r.out.toArray(), want.out, 1e-5, 1e-5);
    expectClose(got.dq.toArray(), want.dq, 1e-5, 1e-5);
    expectClose(got.dk.toArray(), want.dk, 1e-5, 1e-5);
    expectClose(got.dv.toArray(), want.dv, 1e-5, 1e-5);
  });

  test('gradients against central differences of the forward', () => {
    const [N, A, H] = [3, 3, 5];
    const q = randn([N, H], { seed: SEED });
    const k = randn([N, A, H], { seed: SEED + 1 });
    const v = randn([N, A, H], { seed: SEED + 2 });
    const d = randn([N, H], { seed: SEED + 3 }).toArray();
    const T = 1.7;
    const loss = (qa: Float32Array, ka: Float32Array, va: Float32Array) => {
      const o = fusionAttention(tensor(qa, [N, H]), tensor(ka, [N, A, H]), tensor(va, [N, A, H]), { temperature: T }).out.toArray();
      return o.reduce((s, x, j) => s + x * d[j], 0);
    };
    const r = fusionAttention(q, k, v, { temperature: T });
    const g = fusionAttentionBackward(tensor(d, [N, H]), q, k, v, r.probs, { temperature: T });
    const base = [q.toArray(), k.toArray(), v.toArray()];
    [g.dq, g.dk, g.dv].forEach((gt, which) => {
      const analytic = gt.toArray();
      for (let j = 0; j < analytic.length; j += 3) {
        const plus = base.map((a) => Float32Array.from(a));
        const minus = base.map((a) => Float32Array.from(a));
        const eps = 1e-2;
        plus[which][j] += eps;
        minus[which][j] -= eps;
        const numeric = (loss(plus[0], plus[1], plus[2]) - loss(minus[0], minus[1], minus[2])) / (2 * eps);
        expect(Math.abs(numeric - analytic[j])).toBeLessThan(2e-3 * Math.max(1, Math.abs(numeric)));
      }
    });
  });

  test('argument errors name the op and the argument', () => {
    const q = randn([4, 8]);
    expect(() => fusionAttention(q, randn([4, 8]), randn([4, 8]))).toThrow(/fusionAttention: argument 'k' must be \[N, A, H\]/);
    expect(() => fusionAttention(q, randn([4, 2, 7]), randn([4, 2, 7]))).toThrow(/fusionAttention: argument 'k' has shape/);
    expect(() => fusionAttention(q, randn([4, 2, 8]), randn([4, 3, 8]))).toThrow(/fusionAttention: argument 'v'/);
    expect(() => fusionAttention(q, randn([4, 2, 8]), randn([4, 2, 8]), { temperature: 0.5 })).toThrow(/temperature' must be at least 1/);
    expect(() => fusionAttention(q, randn([4, 2, 8]), randn([4, 2, 8]), { dropout: 1 })).toThrow(/dropout' must be in \[0, 1\)/);
    expect(() => fusionAttention(q, randn([4, 2, 8], { dtype: 'bfloat16' }), randn([4, 2, 8]))).toThrow(/fusionAttention: argument 'k' is bfloat16/);
  });
});
