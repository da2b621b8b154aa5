// The CUDA optimizer ops against the CPU ones on fresh random tensors: AdamW over 20 steps on
// many tensors (several millions of elements, odd sizes, fp32/bf16/fp16 params, grads of mixed
// dtypes, skipped grads), sumOfSquares (deterministic), scaleInPlace, clipping, mixed devices.
import { randn, Tensor, zeros } from '../../lib';
import type { FloatDType } from '../../lib';
import { AdamW, adamwStep, clipGradNorm, globalGradNorm, scaleInPlace, sumOfSquares } from '../../lib/optim';
import { describeGpu, expectClose } from '../helpers';

const dev = 'cuda:0';
const seed = () => Math.floor(Math.random() * 2 ** 31);

const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};

/** Equal values (NaN never equal), reporting the first difference. */
function expectSame(actual: ArrayLike<number>, expected: ArrayLike<number>, what = ''): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++)
    if (actual[i] !== expected[i]) throw new Error(`${what} element ${i}: got ${actual[i]}, expected ${expected[i]}`);
}

/** fp32 values within 1e-6 relative of the largest magnitude. */
function expectNear(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rtol = 1e-6): void {
  try {
    expectClose(actual, expected, rtol, rtol * Math.max(maxAbs(expected), 1e-30));
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

/** One rounding step of each dtype, relative (the spacing just above a power of two). */
const ULP: Record<FloatDType, number> = { float32: 1e-6, bfloat16: 2 ** -7, float16: 2 ** -10 };

interface Spec {
  name: string;
  shape: number[];
  dtype: FloatDType;
}

function specs(): Spec[] {
  const out: Spec[] = [
    { name: 'big.weight', shape: [2048, 2048], dtype: 'float32' },
    { name: 'odd.weight', shape: [3000017], dtype: 'float32' },
    { name: 'odd.bias', shape: [1000003], dtype: 'float32' },
    { name: 'bf.weight', shape: [1536, 1001], dtype: 'bfloat16' },
    { name: 'half.weight', shape: [777, 333], dtype: 'float16' },
    { name: 'enc.LayerNorm.weight', shape: [768], dtype: 'float32' },
    { name: 'empty.weight', shape: [0, 5], dtype: 'float32' },
    { name: 'one.weight', shape: [1], dtype: 'bfloat16' },
  ];
  const dtypes: FloatDType[] = ['float32', 'bfloat16', 'float16'];
  for (let i = 0; i < 64; i++)
    out.push({ name: `many.${i}.${i % 4 === 0 ? 'bias' : 'weight'}`, shape: [1 + Math.floor(Math.random() * 40000)], dtype: dtypes[i % 3] });
  return out;
}

describeGpu('CUDA optimizer ops match the CPU', () => {
  test('AdamW: 20 steps over many tensors (millions of elements, odd sizes, fp32/bf16/fp16 params)', () => {
    const sp = specs();
    const cpuParams = new Map(sp.map((s) => [s.name, randn(s.shape, { seed: seed(), dtype: s.dtype, std: 0.5 })]));
    const gpuParams = new Map([...cpuParams].map(([k, t]) => [k, t.to(dev)]));
    const optC = new AdamW(cpuParams, { lr: 3e-3, betas: [0.9, 0.98], eps: 1e-7, weightDecay: 0.05 });
    const optG = new AdamW(gpuParams, { lr: 3e-3, betas: [0.9, 0.98], eps: 1e-7, weightDecay: 0.05 });
    for (let s = 0; s < 20; s++) {
      const gC = new Map<string, Tensor>();
      const gG = new Map<string, Tensor>();
      sp.forEach((x, i) => {
        if (x.name.startsWith('many.') && i % 5 === s % 5) return; // no grad this step
        const g = randn(x.shape, { seed: seed(), dtype: i % 2 ? 'bfloat16' : 'float32', std: 0.01 + (i % 7) });
        gC.set(x.name, g);
        gG.set(x.name, g.to(dev));
      });
      const lr = 3e-3 * (1 - s / 25);
      optC.step(gC, lr);
      optG.step(gG, lr);
      for (const m of [gC, gG]) m.forEach((t) => t.dispose());
    }
    const [stC, stG] = [optC.state(), optG.state()];
    for (const x of sp) {
      const c = cpuParams.get(x.name)!;
      const g = gpuParams.get(x.name)!;
      expect(g.device).toBe(dev);
      expect(g.dtype).toBe(x.dtype);
      const eC = stC.entries[x.name];
      const eG = stG.entries[x.name];
      expect(eG.step).toBe(eC.step);
      expectNear(eG.expAvg, eC.expAvg, `${x.name} expAvg`);
      expectNear(eG.expAvgSq, eC.expAvgSq, `${x.name} expAvgSq`);
      if (x.dtype === 'float32') {
        expect(eG.master).toBeUndefined();
        expectNear(g.toArray(), c.toArray(), `${x.name} param`);
      } else {
        expectNear(eG.master!, eC.master!, `${x.name} master`);
        // the param is its master rounded: within one rounding of the CPU param
        const want = c.toArray();
        expectClose(g.toArray(), want, ULP[x.dtype], ULP[x.dtype] * Math.max(maxAbs(want), 1e-30));
      }
    }
    optC.dispose();
    optG.dispose();
  });

  test('AdamW with params on the CPU and on CUDA equals the all-CPU run', () => {
    const shapes = [[300, 7], [7], [65537], [16384]];
    const ref = new Map(shapes.map((sh, i) => [`p${i}.weight`, randn(sh, { seed: seed() })]));
    const mixed = new Map([...ref].map(([k, t], i) => [k, i % 2 ? t.to(dev) : t.to({})]));
    const oR = new AdamW(ref, { lr: 1e-2 });
    const oM = new AdamW(mixed, { lr: 1e-2 });
    for (let s = 0; s < 5; s++) {
      const g = new Map([...ref].map(([k, t]) => [k, randn([...t.shape], { seed: seed() })]));
      oR.step(g);
      oM.step(new Map([...g].map(([k, t]) => [k, t.to(mixed.get(k)!.device)])));
    }
    for (const [k, t] of ref) expectNear(mixed.get(k)!.toArray(), t.toArray(), k);
  });

  test('sumOfSquares and globalGradNorm: CUDA vs CPU, deterministic', () => {
    const sp = specs();
    const cpu = sp.map((s) => randn(s.shape, { seed: seed(), dtype: s.dtype, std: 0.1 + Math.random() }));
    const gpu = cpu.map((t) => t.to(dev));
    const c = sumOfSquares(cpu);
    const g1 = sumOfSquares(gpu);
    const g2 = sumOfSquares(gpu);
    expect(g2).toBe(g1); // bitwise, run to run
    expectClose([g1], [c], 1e-6);
    expectClose([globalGradNorm(gpu)], [Math.sqrt(c)], 1e-6);
    for (let i = 0; i < 3; i++) expect(sumOfSquares(gpu)).toBe(g1);
    // one tensor only, several sizes around the chunk size
    for (const n of [1, 3, 16383, 16384, 16385, 1 << 22])
      for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
        const t = randn([n], { seed: seed(), dtype });
        const td = t.to(dev);
        expectClose([sumOfSquares([td])], [sumOfSquares([t])], 1e-6);
        expect(sumOfSquares([td])).toBe(sumOfSquares([td]));
      }
    expect(sumOfSquares([zeros([0], { device: dev })])).toBe(0);
  });

  test('scaleInPlace: CUDA equals the CPU bitwise, every dtype', () => {
    const sp = specs();
    const cpu = sp.map((s) => randn(s.shape, { seed: seed(), dtype: s.dtype }));
    const gpu = cpu.map((t) => t.to(dev));
    scaleInPlace(cpu, 0.3711);
    scaleInPlace(gpu, 0.3711);
    cpu.forEach((t, i) => expectSame(gpu[i].toArray(), t.toArray(), sp[i].name));
  });

  test('clipGradNorm over grads on the CPU and on CUDA', () => {
    const a = randn([5000, 33], { seed: seed() });
    const b = randn([70001], { seed: seed(), dtype: 'bfloat16' });
    const ref = [a.to({}), b.to({})];
    const grads = new Map([['a', a.to(dev)], ['b', b]]);
    const want = Math.sqrt(sumOfSquares(ref));
    const norm = clipGradNorm(grads, 1.5);
    expectClose([norm], [want], 1e-6);
    const coef = 1.5 / (want + 1e-6);
    expectNear(grads.get('a')!.toArray(), Float32Array.from(ref[0].toArray(), (v) => v * coef), 'a');
    const bw = Float32Array.from(ref[1].toArray(), (v) => v * coef);
    expectClose(grads.get('b')!.toArray(), bw, 2 ** -8, 1e-30);
    expectClose([globalGradNorm(grads)], [1.5], 1e-2);
  });

  test('adamwStep: tensors of one index on different devices are rejected', () => {
    const p = randn([4], { seed: 1, device: dev });
    const g = randn([4], { seed: 2 });
    const m = zeros([4], { device: dev });
    const v = zeros([4], { device: dev });
    expect(() => adamwStep([p], [g], [m], [v], null, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 }))
      .toThrow(/adamwStep: argument 'grads\[0\]' is on cpu but 'params\[0\]' is on cuda:0/);
  });
});
