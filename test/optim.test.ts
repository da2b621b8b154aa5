// AdamW against torch.optim.AdamW fixtures (scripts/gen_adamw_fixtures.py), state round trips,
// fp32 masters of bf16/fp16 params, transformers' LR schedules, gradient clipping against a
// float64 reference, and bad inputs. Random inputs are fresh each run (the seed is in the names).
import * as fs from 'fs';
import * as path from 'path';
import { randn, Tensor, tensor, zeros } from '../lib';
import {
  AdamW, adamwStep, clipGradNorm, defaultNoDecay, globalGradNorm, LRSchedule, lrAt, scaleInPlace, sumOfSquares,
} from '../lib/optim';
import type { AdamWStateInput } from '../lib/optim';
import { expectClose, rng, roundBf16 } from './helpers';

const SEED = Math.floor(Math.random() * 2 ** 31);
const r = rng(SEED);
const seed = () => Math.floor(r.uniform() * 2 ** 31);

interface Fixture {
  torch: string;
  steps: number;
  params: { name: string; shape: number[]; init: number[] }[];
  grads: Record<string, number[]>[];
  configs: {
    lr: number; betas: [number, number]; eps: number; weightDecay: number; noDecay: string[];
    skip?: [number, string][]; snapshots: Record<string, Record<string, number[]>>;
  }[];
}
const fx: Fixture = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'adamw.json'), 'utf8'));

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/** Equal values (NaN never equal), reporting the first difference. */
function expectSame(actual: ArrayLike<number>, expected: ArrayLike<number>, what = ''): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++)
    if (actual[i] !== expected[i]) throw new Error(`${what} element ${i}: got ${actual[i]}, expected ${expected[i]}`);
}

function fixtureParams(): Map<string, Tensor> {
  return new Map(fx.params.map((p) => [p.name, tensor(p.init, p.shape)]));
}

function fixtureGrads(step: number, skip: Set<string>): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  for (const p of fx.params) if (!skip.has(`${step}:${p.name}`)) m.set(p.name, tensor(fx.grads[step][p.name], p.shape));
  return m;
}

const disposeAll = (m: Map<string, Tensor>) => m.forEach((t) => t.dispose());

describe('AdamW follows torch.optim.AdamW (fixtures)', () => {
  test(`fixture made by torch ${fx.torch}`, () => {
    expect(fx.configs.length).toBeGreaterThanOrEqual(4);
    expect(fx.steps).toBe(100);
  });

  fx.configs.forEach((cfg, ci) => {
    const label = `config ${ci}: lr ${cfg.lr}, betas ${cfg.betas.join('/')}, weight decay ${cfg.weightDecay}` +
      (cfg.skip ? `, ${cfg.skip.length} skipped grads` : '');
    test(label, () => {
      const params = fixtureParams();
      const opt = new AdamW(params, { lr: cfg.lr, betas: cfg.betas, eps: cfg.eps, weightDecay: cfg.weightDecay });
      for (const n of cfg.noDecay) expect(opt.decays(n)).toBe(false);
      const skip = new Set((cfg.skip ?? []).map(([s, n]) => `${s}:${n}`));
      let checked = 0;
      for (let s = 0; s < fx.steps; s++) {
        const grads = fixtureGrads(s, skip);
        opt.step(grads);
        disposeAll(grads);
        const snap = cfg.snapshots[String(s + 1)];
        if (!snap) continue;
        for (const [name, p] of params) {
          const want = snap[name];
          try {
            expectClose(p.toArray(), want, 1e-6, 1e-6 * maxAbs(want));
          } catch (e) {
            throw new Error(`after step ${s + 1}, param '${name}': ${(e as Error).message}`);
          }
          checked++;
        }
      }
      expect(checked).toBe(3 * fx.params.length);
      expect(opt.stepCount).toBe(fx.steps);
      const st = opt.state();
      const skipped = (cfg.skip ?? []).filter(([, n]) => n === 'adapter.up.weight').length;
      expect(st.entries['adapter.up.weight'].step).toBe(fx.steps - skipped);
      expect(st.entries['encoder.dense.bias'].step).toBe(fx.steps);
      opt.dispose();
    });
  });
});

describe(`AdamW state, masters and options (seed ${SEED})`, () => {
  const shapes: Record<string, number[]> = { 'a.weight': [33, 17], 'a.bias': [17], 'b.LayerNorm.weight': [40000] };
  const randomParams = (s: number, dtype: 'float32' | 'bfloat16' | 'float16' = 'float32') =>
    new Map(Object.entries(shapes).map(([k, sh], i) => [k, randn(sh, { seed: s + i, dtype, std: 0.5 })]));
  const randomGrads = (s: number, dtype: 'float32' | 'bfloat16' | 'float16' = 'float32') =>
    new Map(Object.entries(shapes).map(([k, sh], i) => [k, randn(sh, { seed: s + 1000 + i, dtype, std: 0.1 + i })]));

  test('default noDecay: biases and LayerNorm weights', () => {
    for (const n of ['bias', 'x.bias', 'encoder.layer.0.attention.output.LayerNorm.weight', 'h.0.layer_norm.weight', 'adapter_ln.weight'])
      expect(defaultNoDecay(n)).toBe(true);
    for (const n of ['x.weight', 'adapter_up.weight', 'biased.weight', 'scaling'])
      expect(defaultNoDecay(n)).toBe(false);
    const params = randomParams(seed());
    const opt = new AdamW(params, { lr: 1e-3 });
    expect(opt.decays('a.weight')).toBe(true);
    expect(opt.decays('a.bias')).toBe(false);
    expect(opt.decays('b.LayerNorm.weight')).toBe(false);
    const custom = new AdamW(params, { lr: 1e-3, noDecay: (n) => n === 'a.weight' });
    expect(custom.decays('a.weight')).toBe(false);
    expect(custom.decays('a.bias')).toBe(true);
    opt.dispose();
    custom.dispose();
  });

  test('state() / loadState() mid-run continues bitwise identically (also through JSON)', () => {
    const s0 = seed();
    const pA = randomParams(s0);
    const A = new AdamW(pA, { lr: 2e-2, betas: [0.85, 0.99], eps: 1e-7, weightDecay: 0.05 });
    for (let s = 0; s < 10; s++) {
      const g = randomGrads(s0 + 17 * s);
      if (s % 3 === 1) g.delete('a.bias'); // per-param step counts differ
      A.step(g, 2e-2 * (1 - s / 40));
      disposeAll(g);
    }
    const st = A.state();
    expect(st.step).toBe(10);
    expect(st.entries['a.bias'].step).toBe(7);
    expect(st.entries['a.weight'].master).toBeUndefined();
    // a fresh optimizer with other hyper-parameters on copies of the params, one through JSON
    const pB = new Map([...pA].map(([k, t]) => [k, t.to({})]));
    const pC = new Map([...pA].map(([k, t]) => [k, t.to({})]));
    const B = new AdamW(pB, { lr: 0.5, weightDecay: 0 });
    B.loadState(st);
    // plain JSON (typed arrays become {"0": ..} objects) and JSON with number[] arrays
    const pD = new Map([...pA].map(([k, t]) => [k, t.to({})]));
    const json = JSON.parse(JSON.stringify(st)) as AdamWStateInput;
    const jsonArrays = JSON.parse(JSON.stringify(st, (_k, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)));
    expect(Array.isArray(jsonArrays.entries['a.bias'].expAvg)).toBe(true);
    const C = new AdamW(pC, { lr: 0.5 });
    C.loadState(json);
    const D = new AdamW(pD, { lr: 0.5 });
    D.loadState(jsonArrays as AdamWStateInput);
    for (const o of [B, C, D]) {
      expect(o.stepCount).toBe(10);
      const s2 = o.state();
      expect([s2.lr, s2.betas, s2.eps, s2.weightDecay]).toEqual([2e-2, [0.85, 0.99], 1e-7, 0.05]);
    }
    for (let s = 10; s < 25; s++) {
      for (const o of [A, B, C, D]) {
        const g = randomGrads(s0 + 17 * s);
        if (s % 3 === 1) g.delete('a.bias');
        o.step(g, 2e-2 * (1 - s / 40));
        disposeAll(g);
      }
    }
    for (const [k, t] of pA) {
      expectSame(pB.get(k)!.toArray(), t.toArray(), k);
      expectSame(pC.get(k)!.toArray(), t.toArray(), k);
      expectSame(pD.get(k)!.toArray(), t.toArray(), k);
    }
    const [sa, sb] = [A.state(), B.state()];
    for (const k of Object.keys(shapes)) {
      expectSame(sb.entries[k].expAvg, sa.entries[k].expAvg);
      expectSame(sb.entries[k].expAvgSq, sa.entries[k].expAvgSq);
      expect(sb.entries[k].step).toBe(sa.entries[k].step);
    }
    [A, B, C, D].forEach((o) => o.dispose());
  });

  test('loadState validates names and sizes', () => {
    const params = randomParams(seed());
    const opt = new AdamW(params, { lr: 1e-3 });
    const st = opt.state();
    const extra = { ...st, entries: { ...st.entries, 'nope.weight': st.entries['a.bias'] } };
    expect(() => opt.loadState(extra)).toThrow(/AdamW.loadState: argument 'entries' has unknown param 'nope.weight'/);
    const { ['a.bias']: _dropped, ...rest } = st.entries;
    expect(() => opt.loadState({ ...st, entries: rest })).toThrow(/AdamW.loadState: argument 'entries' has no entry for param 'a.bias'/);
    const short = { ...st, entries: { ...st.entries, 'a.bias': { ...st.entries['a.bias'], expAvgSq: new Float32Array(3) } } };
    expect(() => opt.loadState(short)).toThrow(/AdamW.loadState: entry 'a.bias' has 3 values in 'expAvgSq', the param has 17/);
    const master = { ...st, entries: { ...st.entries, 'a.bias': { ...st.entries['a.bias'], master: new Float32Array(17) } } };
    expect(() => opt.loadState(master)).toThrow(/AdamW.loadState: entry 'a.bias' has a master copy but the param is float32/);
    expect(() => opt.loadState({ ...st, lr: NaN })).toThrow(/AdamW.loadState: argument 'lr' must be a finite number/);
    expect(() => opt.loadState({ ...st, step: -1 })).toThrow(/AdamW.loadState: argument 'step' must be an integer >= 0/);
    opt.dispose();
  });

  for (const dtype of ['bfloat16', 'float16'] as const)
    test(`${dtype} params keep an fp32 master; the param is the master rounded; the master follows fp32 exactly`, () => {
      const s0 = seed();
      const low = randomParams(s0, dtype);
      // the fp32 run starts from the same (already rounded) values
      const ref = new Map([...low].map(([k, t]) => [k, t.to({ dtype: 'float32' })]));
      const optLow = new AdamW(low, { lr: 3e-2, weightDecay: 0.1 });
      const optRef = new AdamW(ref, { lr: 3e-2, weightDecay: 0.1 });
      for (let s = 0; s < 12; s++) {
        const g = randomGrads(s0 + 31 * s, s % 2 ? 'bfloat16' : 'float32'); // any float grad dtype
        optLow.step(g);
        optRef.step(g);
        disposeAll(g);
      }
      const st = optLow.state();
      for (const [k, p] of low) {
        expect(p.dtype).toBe(dtype);
        const m = st.entries[k].master!;
        expect(m).toBeInstanceOf(Float32Array);
        expectSame(m, ref.get(k)!.toArray(), `master of ${k}`);
        const rounded = Float32Array.from(m, (v) => (dtype === 'bfloat16' ? roundBf16(v) : v));
        const want = dtype === 'bfloat16' ? rounded : tensor(m, [m.length]).to({ dtype: 'float16' }).toArray();
        expectSame(p.toArray(), want, `param ${k}`);
        expect(maxAbs(Float32Array.from(p.toArray(), (v, i) => v - m[i]))).toBeGreaterThan(0); // really rounded
      }
      // round trip: a fresh optimizer takes the master back and rounds the param from it
      const copy = new Map([...low].map(([k, t]) => [k, zeros([...t.shape], { dtype })]));
      const opt2 = new AdamW(copy, { lr: 1 });
      opt2.loadState(st);
      for (const [k, p] of copy) {
        expectSame(opt2.state().entries[k].master!, st.entries[k].master!);
        expectSame(p.toArray(), low.get(k)!.toArray());
      }
      [optLow, optRef, opt2].forEach((o) => o.dispose());
    });

  test('grads of any float dtype are read as fp32', () => {
    const s0 = seed();
    const p1 = randomParams(s0);
    const p2 = new Map([...p1].map(([k, t]) => [k, t.to({})]));
    const o1 = new AdamW(p1, { lr: 1e-2 });
    const o2 = new AdamW(p2, { lr: 1e-2 });
    for (let s = 0; s < 3; s++) {
      const g16 = randomGrads(s0 + s, 'float16');
      const g32 = new Map([...g16].map(([k, t]) => [k, t.to({ dtype: 'float32' })]));
      o1.step(g16);
      o2.step(g32);
    }
    for (const [k, t] of p1) expectSame(t.toArray(), p2.get(k)!.toArray(), k);
  });

  test('an empty step advances the count and changes nothing', () => {
    const params = randomParams(seed());
    const before = [...params.values()].map((t) => t.toArray());
    const opt = new AdamW(params, { lr: 1e-2 });
    opt.step(new Map());
    expect(opt.stepCount).toBe(1);
    [...params.values()].forEach((t, i) => expectSame(t.toArray(), before[i]));
    expect(opt.state().entries['a.weight'].step).toBe(0);
    opt.dispose();
    opt.dispose(); // idempotent
    expect(() => opt.step(new Map())).toThrow(/AdamW.step: the optimizer was disposed/);
  });

  test('one call updates many tensors, including empty and multi-chunk ones', () => {
    const sizes = [0, 1, 3, 16384, 16385, 50001];
    const ps = sizes.map((n, i) => randn([n], { seed: seed() + i }));
    const gs = sizes.map((n, i) => randn([n], { seed: seed() + 100 + i }));
    const m = sizes.map((n) => zeros([n]));
    const v = sizes.map((n) => zeros([n]));
    const before = ps.map((p) => p.toArray());
    const gv = gs.map((g) => g.toArray());
    const lr = 0.1, wd = 0.02;
    adamwStep(ps, gs, m, v, null, { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: wd, step: 1 });
    // step 1 in float64: m = 0.1 g, v = 0.001 g², p = p(1 - lr wd) - lr · m/0.1 / (sqrt(v/0.001) + eps)
    ps.forEach((p, i) => {
      const want = before[i].map((x, j) => x * (1 - lr * wd) - (lr * gv[i][j]) / (Math.abs(gv[i][j]) + 1e-8));
      expectClose(p.toArray(), want, 1e-6, 1e-7);
      expectClose(m[i].toArray(), gv[i].map((x) => 0.1 * x), 1e-6, 1e-12);
    });
  });
});

describe('LR schedules (transformers)', () => {
  const opts = { baseLr: 2e-4, warmupSteps: 10, totalSteps: 110 };
  test('linear: 0 at the start, base at the end of warmup, half-way down, 0 at the end', () => {
    expect(lrAt('linear', 0, opts)).toBe(0);
    expect(lrAt('linear', 5, opts)).toBeCloseTo(1e-4, 15);
    expect(lrAt('linear', 10, opts)).toBe(2e-4);
    expect(lrAt('linear', 60, opts)).toBeCloseTo(1e-4, 15);
    expect(lrAt('linear', 109, opts)).toBeCloseTo(2e-6, 15);
    expect(lrAt('linear', 110, opts)).toBe(0);
    expect(lrAt('linear', 200, opts)).toBe(0);
  });
  test('cosine: warmup, then 0.5·base half-way and 0 at the end', () => {
    expect(lrAt('cosine', 0, opts)).toBe(0);
    expect(lrAt('cosine', 10, opts)).toBe(2e-4);
    expect(lrAt('cosine', 60, opts)).toBeCloseTo(1e-4, 15);
    expect(lrAt('cosine', 35, opts)).toBeCloseTo(2e-4 * 0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    expect(lrAt('cosine', 110, opts)).toBeCloseTo(0, 15);
  });
  test('constant: base throughout (with an optional linear warmup)', () => {
    expect(lrAt('constant', 0, { ...opts, warmupSteps: 0 })).toBe(2e-4);
    expect(lrAt('constant', 1000, opts)).toBe(2e-4);
    expect(lrAt('constant', 0, opts)).toBe(0);
    expect(lrAt('constant', 5, opts)).toBeCloseTo(1e-4, 15);
  });
  test('no warmup: base at step 0', () => {
    expect(lrAt('linear', 0, { ...opts, warmupSteps: 0 })).toBe(2e-4);
    expect(lrAt('cosine', 0, { ...opts, warmupSteps: 0 })).toBe(2e-4);
  });
  test('LRSchedule agrees with lrAt', () => {
    for (const kind of ['constant', 'linear', 'cosine'] as const) {
      const s = new LRSchedule(kind, opts);
      for (let step = 0; step < 130; step += 7) expect(s.lr(step)).toBe(lrAt(kind, step, opts));
    }
  });
  test('bad arguments', () => {
    expect(() => lrAt('step' as never, 0, opts)).toThrow(/lrAt: argument 'kind' must be one of constant, linear, cosine/);
    expect(() => lrAt('linear', -1, opts)).toThrow(/lrAt: argument 'step' must be an integer >= 0/);
    expect(() => lrAt('linear', 0, { ...opts, baseLr: NaN })).toThrow(/lrAt: argument 'baseLr'/);
    expect(() => new LRSchedule('linear', { ...opts, totalSteps: 1.5 })).toThrow(/LRSchedule: argument 'totalSteps'/);
  });
});

describe(`gradient clipping by global norm (seed ${SEED})`, () => {
  const make = () => {
    const specs: [number[], 'float32' | 'bfloat16' | 'float16'][] = [
      [[64, 33], 'float32'], [[7], 'float32'], [[40000], 'bfloat16'], [[5, 5, 5], 'float16'], [[0], 'float32'],
    ];
    return specs.map(([sh, dtype], i) => randn(sh, { seed: seed() + i, dtype, std: 0.3 + i }));
  };
  const ref = (ts: Tensor[]) => Math.sqrt(ts.reduce((s, t) => s + Array.from(t.toArray()).reduce((a, v) => a + v * v, 0), 0));

  test('globalGradNorm and sumOfSquares match float64, deterministically', () => {
    const ts = make();
    const want = ref(ts);
    expectClose([globalGradNorm(ts)], [want], 1e-6);
    expectClose([sumOfSquares(ts)], [want * want], 2e-6);
    expect(sumOfSquares(ts)).toBe(sumOfSquares(ts));
    const map = new Map(ts.map((t, i) => [`g${i}`, t]));
    expect(globalGradNorm(map)).toBe(globalGradNorm(ts));
    expect(sumOfSquares([])).toBe(0);
  });

  test('clipGradNorm scales by maxNorm / (norm + eps) when the norm is larger, and returns the norm before', () => {
    const ts = make();
    const before = ts.map((t) => t.toArray());
    const norm = ref(ts);
    const maxNorm = norm / 3;
    const got = clipGradNorm(new Map(ts.map((t, i) => [`g${i}`, t])), maxNorm);
    expectClose([got], [norm], 1e-6);
    const coef = maxNorm / (norm + 1e-6);
    ts.forEach((t, i) => {
      const want = before[i].map((v) => v * coef);
      const tol = t.dtype === 'float32' ? 1e-6 : t.dtype === 'bfloat16' ? 2 ** -8 : 2 ** -11;
      // fp16 values below 2^-14 are subnormal: their spacing is 2^-24 whatever their size
      expectClose(t.toArray(), want, tol, t.dtype === 'float16' ? 2 ** -24 : 1e-30);
    });
    expectClose([ref(ts)], [maxNorm], 1e-2); // bf16/fp16 rounding of the scaled values
  });

  test('no scaling when the norm is at most maxNorm (torch semantics)', () => {
    const ts = make();
    const before = ts.map((t) => t.toArray());
    const norm = ref(ts);
    expectClose([clipGradNorm(ts, norm * 1.5)], [norm], 1e-6);
    expectClose([clipGradNorm(ts, norm * 1.0001)], [norm], 1e-6);
    ts.forEach((t, i) => expectSame(t.toArray(), before[i]));
  });

  test('a non-finite norm is returned without scaling', () => {
    const t = tensor([1, Infinity, 2], [3]);
    expect(clipGradNorm([t], 1)).toBe(Infinity);
    expectSame(t.toArray(), [1, Infinity, 2]);
  });

  test('scaleInPlace on every dtype', () => {
    const ts = make();
    const before = ts.map((t) => t.toArray());
    scaleInPlace(ts, -0.75);
    ts.forEach((t, i) => expectClose(t.toArray(), before[i].map((v) => -0.75 * v), t.dtype === 'float32' ? 1e-7 : 2 ** -8, 1e-30));
  });
});

describe('bad inputs name the op and the argument', () => {
  const params = () => new Map([['w', randn([2, 3], { seed: 1 })], ['b', randn([3], { seed: 2 })]]);
  const grads = () => new Map([['w', randn([2, 3], { seed: 3 })], ['b', randn([3], { seed: 4 })]]);

  test('AdamW constructor', () => {
    expect(() => new AdamW(params(), { lr: Infinity })).toThrow(/AdamW: argument 'lr' must be a finite number >= 0/);
    expect(() => new AdamW(params(), { lr: 1e-3, betas: [0.9, 1] })).toThrow(/AdamW: argument 'betas\[1\]' must be a finite number in \[0, 1\)/);
    expect(() => new AdamW(params(), { lr: 1e-3, eps: -1 })).toThrow(/AdamW: argument 'eps'/);
    expect(() => new AdamW(params(), { lr: 1e-3, weightDecay: NaN })).toThrow(/AdamW: argument 'weightDecay'/);
    expect(() => new AdamW(new Map([['i', tensor([1], [1], { dtype: 'int32' })]]), { lr: 1 })).toThrow(/AdamW: param 'i' must be a floating-point tensor/);
    expect(() => new AdamW({} as never, { lr: 1 })).toThrow(/AdamW: argument 'params' must be a Map/);
  });

  test('AdamW.step', () => {
    const opt = new AdamW(params(), { lr: 1e-3 });
    const g = grads();
    g.set('nope', randn([3], { seed: 5 }));
    expect(() => opt.step(g)).toThrow(/AdamW.step: argument 'grads' has unknown key 'nope'/);
    expect(() => opt.step(new Map([['w', randn([3, 2], { seed: 6 })]]))).toThrow(/AdamW.step: grad 'w' has shape \[3, 2\] but the param has \[2, 3\]/);
    expect(() => opt.step(grads(), NaN)).toThrow(/AdamW.step: argument 'lr' must be a finite number >= 0, got NaN/);
    expect(() => opt.step(grads(), Infinity)).toThrow(/AdamW.step: argument 'lr'/);
    expect(() => opt.step(new Map([['b', tensor([1, 2, 3], [3], { dtype: 'int32' })]]))).toThrow(/AdamW.step: grad 'b' must be a floating-point tensor, got int32/);
    expect(() => opt.step(new Map([['b', [1, 2, 3] as never]]))).toThrow(/AdamW.step: argument 'grads\['b'\]' must be a Tensor/);
    expect(opt.stepCount).toBe(0); // nothing was applied
    opt.dispose();
  });

  test('adamwStep (native)', () => {
    const p = [randn([4], { seed: 1 }), randn([2], { seed: 2 })];
    const g = [randn([4], { seed: 3 }), randn([2], { seed: 4 })];
    const m = [zeros([4]), zeros([2])];
    const v = [zeros([4]), zeros([2])];
    const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
    expect(() => adamwStep(p, g.slice(0, 1), m, v, null, hp)).toThrow(/adamwStep: argument 'grads' has 1 entries but 'params' has 2/);
    expect(() => adamwStep(p, [g[0], randn([3], { seed: 5 })], m, v, null, hp)).toThrow(/adamwStep: argument 'grads\[1\]' has shape \[3\] but 'params\[1\]' has \[2\]/);
    expect(() => adamwStep(p, g, [m[0], zeros([2], { dtype: 'bfloat16' })], v, null, hp)).toThrow(/adamwStep: argument 'expAvg\[1\]' must be float32, got bfloat16/);
    expect(() => adamwStep(p, [g[0], tensor([1, 2], [2], { dtype: 'int32' })], m, v, null, hp)).toThrow(/adamwStep: argument 'grads\[1\]' must be a floating-point tensor, got int32/);
    expect(() => adamwStep(p, g, m, v, null, { ...hp, lr: NaN })).toThrow(/adamwStep: argument 'lr' must be finite, got nan/);
    expect(() => adamwStep(p, g, m, v, null, { ...hp, beta2: 1 })).toThrow(/adamwStep: argument 'beta2' must be in \[0, 1\)/);
    expect(() => adamwStep(p, g, m, v, null, { ...hp, step: 0 })).toThrow(/adamwStep: argument 'step' must be an integer >= 1/);
    expect(() => adamwStep(p, g, m, v, null, { ...hp, step: [1, 2.5] })).toThrow(/adamwStep: argument 'step\[1\]' must be an integer >= 1/);
    expect(() => adamwStep(p, g, m, v, null, { ...hp, weightDecay: [0, 0, 0] })).toThrow(/adamwStep: argument 'weightDecay' has 3 values for 2 tensors/);
    expect(() => adamwStep(p, g, [m[0], m[0]], v, null, hp)).toThrow(/adamwStep: argument 'expAvg\[1\]' has shape \[4\] but 'params\[1\]' has \[2\]/);
    expect(() => adamwStep([p[0], p[0]], [g[0], g[0]], [m[0], zeros([4])], [v[0], zeros([4])], null, hp)).toThrow(/adamwStep: argument 'params\[1\]' shares storage with 'params\[0\]'/);
    const low = randn([4], { seed: 9, dtype: 'bfloat16' });
    expect(() => adamwStep([low], [g[0]], [m[0]], [v[0]], null, hp)).toThrow(/adamwStep: argument 'master\[0\]' is required: 'params\[0\]' is bfloat16/);
    expect(() => adamwStep([p[0]], [g[0]], [m[0]], [v[0]], [zeros([4])], hp)).toThrow(/adamwStep: argument 'master\[0\]' must be null for a float32 param/);
    expect(() => adamwStep(p, g, m, v, null, null as never)).toThrow(/adamwStep: argument 'hp' must be an object/);
  });

  test('clipping and norms', () => {
    const ts = [randn([3], { seed: 1 })];
    expect(() => clipGradNorm(ts, NaN)).toThrow(/clipGradNorm: argument 'maxNorm' must be a finite number >= 0/);
    expect(() => clipGradNorm(ts, 1, -1)).toThrow(/clipGradNorm: argument 'eps'/);
    expect(() => clipGradNorm('x' as never, 1)).toThrow(/clipGradNorm: argument 'grads' must be a Map/);
    expect(() => globalGradNorm([ts[0], 5 as never])).toThrow(/globalGradNorm: argument 'grads\[1\]' must be a Tensor/);
    expect(() => sumOfSquares([tensor([1], [1], { dtype: 'int32' })])).toThrow(/sumOfSquares: argument 'tensors\[0\]' must be a floating-point tensor/);
    expect(() => scaleInPlace(ts, Infinity)).toThrow(/scaleInPlace: argument 's' must be a finite number/);
    expect(() => scaleInPlace([ts[0], ts[0]], 2)).toThrow(/scaleInPlace: argument 'tensors\[1\]' shares storage with 'tensors\[0\]'/);
  });
});
