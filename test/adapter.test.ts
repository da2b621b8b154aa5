// The adapter op on the CPU against a float64 reference on fresh random inputs,
// dropout, the batched op, the layer, and bad inputs.
import {
  adapterBackward, adapterForward, adapterForwardBatched, BottleneckAdapter, randn, stack, tensor, Tensor, zeros,
} from '../lib';
import { Act, refForward } from './adapterRef';
import { expectClose, rng } from './helpers';

function weights(d: number, r: number, seed: number, dtype: 'float32' | 'bfloat16' = 'float32') {
  return {
    downWeight: randn([r, d], { seed, std: 0.3, dtype }),
    downBias: randn([r], { seed: seed + 1, std: 0.3, dtype }),
    upWeight: randn([d, r], { seed: seed + 2, std: 0.3, dtype }),
    upBias: randn([d], { seed: seed + 3, std: 0.3, dtype }),
  };
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

describe('adapterForward on random inputs matches float64', () => {
  const r0 = rng(42);
  const cases = Array.from({ length: 8 }, (_, i) => ({
    N: 1 + Math.floor(r0.uniform() * 70),
    d: 1 + Math.floor(r0.uniform() * 100),
    r: 1 + Math.floor(r0.uniform() * 20),
    act: (['relu', 'gelu', 'gelu_tanh', 'silu', 'identity'] as Act[])[i % 5],
    s: r0.uniform() * 3 - 1,
  }));
  for (const c of cases)
    test(`N=${c.N} d=${c.d} r=${c.r} ${c.act} s=${c.s.toFixed(2)}`, () => {
      const seed = Math.floor(Math.random() * 1e9);
      const x = randn([c.N, c.d], { seed });
      const w = weights(c.d, c.r, seed + 10);
      const { out, saved } = adapterForward(x, w, { activation: c.act, scaling: c.s });
      const ref = refForward({
        x: x.toArray(), N: c.N, d: c.d, r: c.r, dw: w.downWeight.toArray(), db: w.downBias.toArray(),
        uw: w.upWeight.toArray(), ub: w.upBias.toArray(), s: c.s, activation: c.act,
      });
      expectClose(out.toArray(), ref.out, 1e-5, 1e-5 * maxAbs(ref.out));
      expectClose(saved.hPre.toArray(), ref.hPre, 1e-5, 1e-5 * maxAbs(ref.hPre));
    });

  test('[B, T, d] input keeps its shape', () => {
    const x = randn([2, 5, 12], { seed: 3 });
    const { out } = adapterForward(x, weights(12, 3, 4));
    expect(out.shape).toEqual([2, 5, 12]);
  });

  test('bf16 inputs compute in fp32 and round once', () => {
    const x = randn([33, 64], { seed: 5, dtype: 'bfloat16' });
    const w = weights(64, 16, 6, 'bfloat16');
    const { out } = adapterForward(x, w, { activation: 'gelu', scaling: 2 });
    expect(out.dtype).toBe('bfloat16');
    const ref = refForward({
      x: x.toArray(), N: 33, d: 64, r: 16, dw: w.downWeight.toArray(), db: w.downBias.toArray(),
      uw: w.upWeight.toArray(), ub: w.upBias.toArray(), s: 2, activation: 'gelu',
    });
    expectClose(out.toArray(), ref.out, 1e-2, 1e-2);
  });
});

describe('dropout', () => {
  const N = 64;
  const d = 48;
  const x = randn([N, d], { seed: 1 });
  const w = weights(d, 8, 2);
  const p = 0.3;

  function factors(out: Tensor, seed: number): Float64Array {
    // out - x = mask ⊙ s·z: recover the mask from the dropout-free output
    const clean = adapterForward(x, w, { scaling: 1.5 }).out.toArray();
    const o = out.toArray();
    const xv = x.toArray();
    void seed;
    return Float64Array.from(o, (v, i) => (clean[i] - xv[i] === 0 ? 1 : (v - xv[i]) / (clean[i] - xv[i])));
  }

  test('keeps elements with probability 1-p and scales them by 1/(1-p); same seed, same mask', () => {
    const a = adapterForward(x, w, { scaling: 1.5, dropout: p, training: true, seed: 11 }).out;
    const b = adapterForward(x, w, { scaling: 1.5, dropout: p, training: true, seed: 11 }).out;
    const c = adapterForward(x, w, { scaling: 1.5, dropout: p, training: true, seed: 12 }).out;
    expect(Array.from(a.toArray())).toEqual(Array.from(b.toArray()));
    expect(Array.from(a.toArray())).not.toEqual(Array.from(c.toArray()));
    const f = factors(a, 11);
    let dropped = 0;
    for (const v of f) {
      if (Math.abs(v) < 1e-4) dropped++;
      else expect(Math.abs(v - 1 / (1 - p))).toBeLessThan(1e-3);
    }
    expect(Math.abs(dropped / f.length - p)).toBeLessThan(0.05);
  });

  test('is off unless training', () => {
    const a = adapterForward(x, w, { dropout: p, seed: 3 }).out.toArray();
    const b = adapterForward(x, w, {}).out.toArray();
    expect(Array.from(a)).toEqual(Array.from(b));
  });

  test('backward uses the forward mask', () => {
    const { out, saved } = adapterForward(x, w, { scaling: 1.5, dropout: p, training: true, seed: 21 });
    const mask = factors(out, 21);
    const dOut = randn([N, d], { seed: 9 });
    const g = adapterBackward(dOut, saved);
    // dUpBias = s · Σ_n mask ⊙ dOut
    const dv = dOut.toArray();
    const expected = new Float64Array(d);
    for (let n = 0; n < N; n++) for (let c = 0; c < d; c++) expected[c] += 1.5 * mask[n * d + c] * dv[n * d + c];
    expectClose(g.dUpBias.toArray(), expected, 1e-4, 1e-4);
  });
});

describe('adapterForwardBatched', () => {
  test('equals running each adapter on its rows; -1 rows pass through', () => {
    const A = 3;
    const N = 40;
    const d = 24;
    const r = 6;
    const x = randn([N, d], { seed: 1 });
    const ws = Array.from({ length: A }, (_, k) => weights(d, r, 100 + 10 * k));
    const stack = (key: keyof ReturnType<typeof weights>, shape: number[]) =>
      tensor(ws.flatMap((w) => Array.from(w[key].toArray())), [A, ...shape]);
    const stacked = {
      downWeight: stack('downWeight', [r, d]), downBias: stack('downBias', [r]),
      upWeight: stack('upWeight', [d, r]), upBias: stack('upBias', [d]),
    };
    const g = rng(5);
    const rows = Int32Array.from({ length: N }, () => Math.floor(g.uniform() * (A + 1)) - 1);
    const scales = [0.5, 1, 2];
    const { out } = adapterForwardBatched(x, stacked, rows, { activation: 'silu', scaling: scales });
    const o = out.toArray();
    const xv = x.toArray();
    for (let k = -1; k < A; k++) {
      const idx = [...rows.keys()].filter((n) => rows[n] === k);
      if (!idx.length) continue;
      const xs = tensor(idx.flatMap((n) => Array.from(xv.subarray(n * d, (n + 1) * d))), [idx.length, d]);
      const want = k < 0 ? xs.toArray() : adapterForward(xs, ws[k], { activation: 'silu', scaling: scales[k] }).out.toArray();
      const got = idx.flatMap((n) => Array.from(o.subarray(n * d, (n + 1) * d)));
      expectClose(got, want, 1e-6, 1e-6);
    }
  });
});

describe('adapterForwardBatched with a residual', () => {
  test('out = residual + s_k·f_k(x); rows routed to none get the residual', () => {
    const [A, N, d, r] = [2, 9, 16, 4];
    const x = randn([N, d], { seed: 31 });
    const res = randn([N, d], { seed: 32 });
    const ws = [weights(d, r, 40), weights(d, r, 50)];
    const st = (k: 'downWeight' | 'downBias' | 'upWeight' | 'upBias') => stack(ws.map((w) => w[k]));
    const rows = Int32Array.from([0, 1, -1, 1, 0, -1, 1, 1, 0]);
    const out = adapterForwardBatched(x, { downWeight: st('downWeight'), downBias: st('downBias'), upWeight: st('upWeight'), upBias: st('upBias') },
      rows, { scaling: [0.5, 2], residual: res, activation: 'gelu' }).out.toArray();
    const xv = x.toArray();
    const rv = res.toArray();
    rows.forEach((k, n) => {
      const row = (t: Float32Array) => t.slice(n * d, (n + 1) * d);
      const want = k < 0 ? row(rv) : adapterForward(tensor(row(xv), [1, d]), ws[k], { scaling: [0.5, 2][k], residual: tensor(row(rv), [1, d]), activation: 'gelu' }).out.toArray();
      expectClose(out.slice(n * d, (n + 1) * d), want, 1e-6, 1e-6);
    });
    expect(() => adapterForwardBatched(x, { downWeight: st('downWeight'), downBias: st('downBias'), upWeight: st('upWeight'), upBias: st('upBias') },
      rows, { residual: randn([N, d + 1]) })).toThrow(/argument 'residual' has shape \[9, 17\], expected \[9, 16\]/);
  });
});

describe('BottleneckAdapter', () => {
  test('AdapterHub names and shapes; reduction factor rounds as AdapterHub', () => {
    const a = new BottleneckAdapter({ hiddenSize: 50, reductionFactor: 16, device: 'cpu', seed: 1 });
    expect(a.bottleneckSize).toBe(3);
    const p = a.parameters();
    expect([...p.keys()]).toEqual(['adapter_down.0.weight', 'adapter_down.0.bias', 'adapter_up.weight', 'adapter_up.bias']);
    expect(p.get('adapter_down.0.weight')!.shape).toEqual([3, 50]);
    expect(p.get('adapter_up.weight')!.shape).toEqual([50, 3]);
    expect(new BottleneckAdapter({ hiddenSize: 8, reductionFactor: 16, device: 'cpu' }).bottleneckSize).toBe(1);
    expect(new BottleneckAdapter({ hiddenSize: 8, bottleneckSize: 5, device: 'cpu' }).bottleneckSize).toBe(5);
    const l = new BottleneckAdapter({ hiddenSize: 8, scaling: 'channel', device: 'cpu' });
    expect(l.parameters().get('scaling')!.shape).toEqual([8]);
    expect(new BottleneckAdapter({ hiddenSize: 8, scaling: 'learned', device: 'cpu' }).parameters().get('scaling')!.shape).toEqual([1]);
  });

  test("'mam' starts as the identity with down in ±1/√d", () => {
    const a = new BottleneckAdapter({ hiddenSize: 64, reductionFactor: 4, device: 'cpu', seed: 3 });
    const x = randn([5, 64], { seed: 4 });
    expect(Array.from(a.forward(x).toArray())).toEqual(Array.from(x.toArray()));
    const dw = a.parameters().get('adapter_down.0.weight')!.toArray();
    expect(maxAbs(dw)).toBeLessThanOrEqual(1 / 8);
    expect(maxAbs(dw)).toBeGreaterThan(0.1);
    expect(maxAbs(a.parameters().get('adapter_up.weight')!.toArray())).toBe(0);
  });

  test("'bert' draws N(0, 0.02); 'houlsby' a truncated normal in ±0.02", () => {
    const b = new BottleneckAdapter({ hiddenSize: 256, reductionFactor: 2, init: 'bert', device: 'cpu', seed: 5 });
    const v = b.parameters().get('adapter_up.weight')!.toArray();
    const std = Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
    expect(Math.abs(std - 0.02)).toBeLessThan(0.001);
    const h = new BottleneckAdapter({ hiddenSize: 256, reductionFactor: 2, init: 'houlsby', device: 'cpu', seed: 6 });
    for (const name of ['adapter_down.0.weight', 'adapter_up.weight']) {
      const t = h.parameters().get(name)!.toArray();
      expect(maxAbs(t)).toBeLessThanOrEqual(0.02);
      const sd = Math.sqrt(t.reduce((s, x) => s + x * x, 0) / t.length);
      expect(sd).toBeGreaterThan(0.007); // a normal(0.01) truncated at 2σ has std ≈ 0.0088
      expect(sd).toBeLessThan(0.0105);
    }
    expect(maxAbs(h.parameters().get('adapter_down.0.bias')!.toArray())).toBe(0);
  });

  test('backward accumulates into grads; zeroGrad clears', () => {
    const a = new BottleneckAdapter({ hiddenSize: 16, bottleneckSize: 4, init: 'bert', scaling: 'learned', device: 'cpu', seed: 7 });
    const x = randn([6, 16], { seed: 8 });
    const dOut = randn([6, 16], { seed: 9 });
    a.forward(x, { training: true });
    a.backward(dOut);
    const once = new Map([...a.grads].map(([k, v]) => [k, v.toArray()]));
    expect([...once.keys()].sort()).toEqual([...a.parameters().keys()].sort());
    a.forward(x, { training: true });
    a.backward(dOut);
    for (const [k, v] of a.grads) expectClose(v.toArray(), once.get(k)!.map((e) => 2 * e), 1e-6, 1e-7);
    a.zeroGrad();
    expect(a.grads.size).toBe(0);
  });

  test('bad configurations', () => {
    expect(() => new BottleneckAdapter({ hiddenSize: 0 })).toThrow(/hiddenSize must be a positive integer/);
    expect(() => new BottleneckAdapter({ hiddenSize: 8, init: 'xavier' as never, device: 'cpu' })).toThrow(/init must be/);
    expect(() => new BottleneckAdapter({ hiddenSize: 8, scaling: 'big' as never, device: 'cpu' })).toThrow(/scaling must be/);
    expect(() => new BottleneckAdapter({ hiddenSize: 8, dropout: 1, device: 'cpu' })).toThrow(/dropout must be in \[0, 1\)/);
    expect(() => new BottleneckAdapter({ hiddenSize: 8, device: 'cpu' }).backward(zeros([1, 8]))).toThrow(/call forward first/);
  });
});

describe('bad inputs to the adapter ops', () => {
  const x = randn([4, 8], { seed: 1 });
  const w = weights(8, 2, 2);
  const run = (f: () => unknown) => () => f();
  const cases: [string, () => unknown, RegExp][] = [
    ['mismatched d', () => adapterForward(x, { ...w, downWeight: randn([2, 9]) }), /adapterForward: argument 'upWeight' has shape \[8, 2\], expected|argument 'downWeight' has shape \[2, 9\], expected \[2, 8\]/],
    ['mismatched r', () => adapterForward(x, { ...w, upWeight: randn([8, 3]) }), /adapterForward: argument 'upWeight' has shape \[8, 3\], expected \[8, 2\]/],
    ['bias length', () => adapterForward(x, { ...w, upBias: randn([7]) }), /argument 'upBias' has shape \[7\], expected \[8\]/],
    ['dtype mix', () => adapterForward(x, { ...w, downBias: randn([2], { dtype: 'bfloat16' }) }), /argument 'downBias' is bfloat16 but 'x' is float32/],
    ['1-D x', () => adapterForward(randn([8]), w), /argument 'x' must be \[N, d\] or \[B, T, d\]/],
    ['residual shape', () => adapterForward(x, w, { residual: randn([4, 7]) }), /argument 'residual' has shape \[4, 7\], expected \[4, 8\]/],
    ['scaling shape', () => adapterForward(x, { ...w, scaling: randn([3]) }), /argument 'scaling' must be \[1\] or \[d\]/],
    ['activation', () => adapterForward(x, w, { activation: 'tanh' as never }), /activation must be one of/],
    ['dropout', () => adapterForward(x, w, { dropout: 1, training: true }), /dropout must be in \[0, 1\)/],
    ['path', () => adapterForward(x, w, { path: 'fast' as never }), /path must be 'auto', 'fused' or 'cublas'/],
    ['missing weight', () => adapterForward(x, { ...w, upBias: undefined as never }), /argument 'upBias' must be a Tensor/],
    ['disposed weight', () => { const t = randn([2]); t.dispose(); return adapterForward(x, { ...w, downBias: t }); }, /argument 'downBias' is a disposed tensor/],
    ['dOut shape', () => adapterBackward(randn([4, 7]), adapterForward(x, w).saved), /adapterBackward: argument 'dOut' has shape \[4, 7\], expected \[4, 8\]/],
    ['saved', () => adapterBackward(x, {} as never), /argument 'saved' must come from adapterForward/],
    ['batched rowAdapter length', () => adapterForwardBatched(x, { downWeight: randn([2, 2, 8]), downBias: randn([2, 2]), upWeight: randn([2, 8, 2]), upBias: randn([2, 8]) }, new Int32Array(3)), /rowAdapter' has length 3, x has 4 rows/],
    ['batched index range', () => adapterForwardBatched(x, { downWeight: randn([2, 2, 8]), downBias: randn([2, 2]), upWeight: randn([2, 8, 2]), upBias: randn([2, 8]) }, Int32Array.from([0, 1, 2, -1])), /rowAdapter' has index 2 at row 2; valid indices are -1 \(pass through\) to 1/],
    ['batched negative index', () => adapterForwardBatched(x, { downWeight: randn([2, 2, 8]), downBias: randn([2, 2]), upWeight: randn([2, 8, 2]), upBias: randn([2, 8]) }, Int32Array.from([0, -2, 0, 0])), /has index -2 at row 1/],
    ['batched stack shape', () => adapterForwardBatched(x, { downWeight: randn([2, 2, 8]), downBias: randn([2, 2]), upWeight: randn([3, 8, 2]), upBias: randn([2, 8]) }, new Int32Array(4)), /argument 'upWeight' has shape \[3, 8, 2\], expected \[2, 8, 2\]/],
    ['batched scaling count', () => adapterForwardBatched(x, { downWeight: randn([2, 2, 8]), downBias: randn([2, 2]), upWeight: randn([2, 8, 2]), upBias: randn([2, 8]) }, new Int32Array(4), { scaling: [1, 2, 3] }), /scaling has 3 entries for 2 adapters/],
  ];
  for (const [name, f, re] of cases) test(name, () => expect(run(f)).toThrow(re));
});
