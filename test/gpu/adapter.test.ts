// The CUDA adapter paths (fused and cuBLAS-composed) against the CPU op on fresh random
// inputs, outputs poisoned first; dropout masks; the batched op; errors.
import {
  adapterBackward, adapterForward, adapterForwardBatched, randn, Tensor, tensor,
} from '../../lib';
import type { AdapterWeights } from '../../lib';
import { describeGpu, expectClose, poisonNext, relErr } from '../helpers';

const dev = 'cuda:0';
type F = 'float32' | 'bfloat16' | 'float16';
const seed = () => Math.floor(Math.random() * 2 ** 31);
const tol: Record<F, number> = { float32: 1e-5, bfloat16: 1e-2, float16: 4e-3 };

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Norm-wise relative error within tol, and no element off by more than 4·tol·max|expected|. */
function expectNear(actual: Float32Array, expected: Float32Array, t: number): void {
  expect(relErr(actual, expected)).toBeLessThan(t);
  expectClose(actual, expected, 0, 4 * t * Math.max(maxAbs(expected), 1e-6));
}

function make(N: number, d: number, r: number, dtype: F, scaling?: 'learned' | 'channel') {
  const s = seed();
  const cpu: AdapterWeights = {
    downWeight: randn([r, d], { seed: s, std: 1 / Math.sqrt(d), dtype }),
    downBias: randn([r], { seed: s + 1, std: 0.1, dtype }),
    upWeight: randn([d, r], { seed: s + 2, std: 1 / Math.sqrt(r), dtype }),
    upBias: randn([d], { seed: s + 3, std: 0.1, dtype }),
  };
  if (scaling) cpu.scaling = randn([scaling === 'learned' ? 1 : d], { seed: s + 4, mean: 1, std: 0.3, dtype });
  const gpu: AdapterWeights = {
    downWeight: cpu.downWeight.to(dev), downBias: cpu.downBias.to(dev),
    upWeight: cpu.upWeight.to(dev), upBias: cpu.upBias.to(dev),
  };
  if (cpu.scaling) gpu.scaling = cpu.scaling.to(dev);
  const x = randn([N, d], { seed: s + 5, dtype });
  return { cpu, gpu, x, xd: x.to(dev) };
}

const GRADS = ['dx', 'dDownWeight', 'dDownBias', 'dUpWeight', 'dUpBias'] as const;

describeGpu('CUDA adapter forward and backward match the CPU', () => {
  const shapes: [number, number, number][] = [[1, 16, 16], [37, 64, 16], [1000, 768, 48], [4096, 1024, 64], [513, 13, 3], [2048, 4096, 256], [300, 8192, 512], [65536, 1024, 64]];
  for (const dtype of ['float32', 'bfloat16', 'float16'] as F[])
    for (const [N, d, r] of shapes)
      for (const path of ['fused', 'cublas', 'auto'] as const)
        test(`${dtype} N=${N} d=${d} r=${r} ${path}`, () => {
          const { cpu, gpu, x, xd } = make(N, d, r, dtype);
          const opts = { activation: 'gelu' as const, scaling: 0.7 };
          const want = adapterForward(x, cpu, opts);
          poisonNext([N, d], dtype, dev);
          poisonNext([N, r], 'float32', dev);
          let got: ReturnType<typeof adapterForward>;
          try {
            got = adapterForward(xd, gpu, { ...opts, path });
          } catch (e) {
            // the fused path refuses shapes it does not fit, by name
            expect(path).toBe('fused');
            expect((e as Error).message).toMatch(/adapterForward: the fused path needs/);
            return;
          }
          expect(got.path).toMatch(path === 'auto' ? /fused|cublas/ : new RegExp(path));
          expectNear(got.out.toArray(), want.out.toArray(), tol[dtype]);
          expectNear(got.saved.hPre.toArray(), want.saved.hPre.toArray(), tol[dtype]);
          const dOut = randn([N, d], { seed: seed(), dtype });
          const gw = adapterBackward(dOut, want.saved);
          let gg: ReturnType<typeof adapterBackward>;
          poisonNext([N, d], dtype, dev);
          try {
            gg = adapterBackward(dOut.to(dev), got.saved, { path });
          } catch (e) {
            expect(path).toBe('fused');
            expect((e as Error).message).toMatch(/adapterBackward: the fused path needs/);
            return;
          }
          for (const k of GRADS) expectNear(gg[k].toArray(), gw[k].toArray(), tol[dtype] * 2);
        });

  for (const scaling of ['learned', 'channel'] as const)
    for (const dtype of ['float32', 'bfloat16'] as F[])
      test(`${scaling} scaling ${dtype}, residual given`, () => {
        const { cpu, gpu, x, xd } = make(333, 256, 32, dtype, scaling);
        const res = randn([333, 256], { seed: seed(), dtype });
        const want = adapterForward(x, cpu, { activation: 'silu', residual: res });
        const got = adapterForward(xd, gpu, { activation: 'silu', residual: res.to(dev) });
        expectNear(got.out.toArray(), want.out.toArray(), tol[dtype]);
        const dOut = randn([333, 256], { seed: seed(), dtype });
        const gw = adapterBackward(dOut, want.saved);
        const gg = adapterBackward(dOut.to(dev), got.saved);
        for (const k of GRADS) expectNear(gg[k].toArray(), gw[k].toArray(), tol[dtype] * 2);
        expectNear(gg.dScaling!.toArray(), gw.dScaling!.toArray(), tol[dtype] * 2);
      });

  for (const dtype of ['float32', 'bfloat16'] as F[])
    for (const path of ['fused', 'cublas'] as const)
      test(`dropout masks equal the CPU's (${dtype}, ${path})`, () => {
        const { cpu, gpu, x, xd } = make(777, 128, 16, dtype);
        const o = { scaling: 2, dropout: 0.25, training: true, seed: seed() };
        const want = adapterForward(x, cpu, o);
        const got = adapterForward(xd, gpu, { ...o, path });
        const w = want.out.toArray();
        const g = got.out.toArray();
        const xv = x.toArray();
        const clean = adapterForward(x, cpu, { scaling: 2 }).out.toArray();
        // Where the adapter's contribution is clearly non-zero, a dropped element equals x
        // exactly and a kept one does not: the masks must agree there element by element.
        let compared = 0;
        for (let i = 0; i < w.length; i++) {
          if (Math.abs(clean[i] - xv[i]) < 0.05) continue;
          compared++;
          expect(g[i] === xv[i]).toBe(w[i] === xv[i]);
        }
        expect(compared).toBeGreaterThan(w.length / 2);
        expectNear(g, w, tol[dtype]);
        const dOut = randn([777, 128], { seed: seed(), dtype });
        const gw = adapterBackward(dOut, want.saved);
        const gg = adapterBackward(dOut.to(dev), got.saved, { path: 'cublas' });
        for (const k of GRADS) expectNear(gg[k].toArray(), gw[k].toArray(), tol[dtype] * 2);
      });

  for (const dtype of ['float32', 'bfloat16'] as F[])
    for (const path of ['fused', 'cublas', 'auto'] as const)
      test(`no rows: backward gives zero weight gradients like the CPU (${dtype}, ${path})`, () => {
        const { cpu, gpu } = make(1, 64, 32, dtype);
        const want = adapterBackward(randn([0, 64], { dtype }), adapterForward(randn([0, 64], { dtype }), cpu).saved);
        const f = adapterForward(randn([0, 64], { dtype, device: dev }), gpu, { path });
        poisonNext([32, 64], 'float32', dev);  // dDownWeight: the GEMM over K = 0 must write its zeros
        const gg = adapterBackward(randn([0, 64], { dtype, device: dev }), f.saved, { path });
        expect(gg.dx.shape).toEqual([0, 64]);
        for (const k of GRADS) {
          const a = gg[k].toArray();
          expect(a.length).toBe(want[k].toArray().length);
          expect(want[k].toArray().every((v) => v === 0) && a.every((v) => v === 0)).toBe(true);
        }
      });

  test('the fused backward runs the SIMT kernel for fp32 and odd shapes, and refuses dropout by name', () => {
    for (const [dtype, N, d, r] of [['float32', 333, 200, 24], ['bfloat16', 77, 13, 5], ['float16', 64, 100, 7]] as [F, number, number, number][]) {
      const { cpu, gpu, x, xd } = make(N, d, r, dtype);
      const want = adapterForward(x, cpu, { activation: 'silu', scaling: 1.5 });
      const got = adapterForward(xd, gpu, { activation: 'silu', scaling: 1.5, path: 'fused' });
      const dOut = randn([N, d], { seed: seed(), dtype });
      const gw = adapterBackward(dOut, want.saved);
      poisonNext([N, d], dtype, dev);
      const gg = adapterBackward(dOut.to(dev), got.saved, { path: 'fused' });
      expect(gg.path).toBe('fused-simt');
      for (const k of GRADS) expectNear(gg[k].toArray(), gw[k].toArray(), tol[dtype] * 2);
    }
    const { gpu, xd } = make(64, 64, 16, 'bfloat16');
    const dropped = adapterForward(xd, gpu, { dropout: 0.1, training: true, seed: 3 });
    expect(() => adapterBackward(randn([64, 64], { dtype: 'bfloat16', device: dev }), dropped.saved, { path: 'fused' }))
      .toThrow(/adapterBackward: the fused path needs r <= 256, fixed scaling, no dropout/);
  });

  test('the fused backward is deterministic (same bits twice)', () => {
    const { gpu, xd } = make(4096, 1024, 64, 'bfloat16');
    const f = adapterForward(xd, gpu, { path: 'fused' });
    const dOut = randn([4096, 1024], { seed: 1, dtype: 'bfloat16', device: dev });
    const a = adapterBackward(dOut, f.saved, { path: 'fused' });
    const b = adapterBackward(dOut, f.saved, { path: 'fused' });
    for (const k of GRADS) expect(Buffer.from(a[k].toArray().buffer).equals(Buffer.from(b[k].toArray().buffer))).toBe(true);
  });
});

describeGpu('CUDA batched adapters', () => {
  for (const [dtype, d, r] of [['bfloat16', 1024, 64], ['float32', 768, 48], ['float16', 13, 5]] as [F, number, number][])
    for (const A of [1, 8, 32])
      test(`${A} adapters ${dtype} d=${d} r=${r} equal per-adapter runs`, () => {
        const N = 5000;
        const s = seed();
        const stacked = {
          downWeight: randn([A, r, d], { seed: s, std: 1 / Math.sqrt(d), dtype }),
          downBias: randn([A, r], { seed: s + 1, std: 0.1, dtype }),
          upWeight: randn([A, d, r], { seed: s + 2, std: 1 / Math.sqrt(r), dtype }),
          upBias: randn([A, d], { seed: s + 3, std: 0.1, dtype }),
        };
        const rows = Int32Array.from({ length: N }, (_, i) => ((i * 7919 + s) % (A + 1)) - 1);
        const scales = Array.from({ length: A }, (_, k) => 0.5 + k / A);
        const x = randn([N, d], { seed: s + 4, dtype });
        const onGpu = (t: Tensor) => t.to(dev);
        poisonNext([N, d], dtype, dev);
        const got = adapterForwardBatched(onGpu(x), {
          downWeight: onGpu(stacked.downWeight), downBias: onGpu(stacked.downBias),
          upWeight: onGpu(stacked.upWeight), upBias: onGpu(stacked.upBias),
        }, rows, { activation: 'relu', scaling: scales });
        const want = adapterForwardBatched(x, stacked, rows, { activation: 'relu', scaling: scales });
        expectNear(got.out.toArray(), want.out.toArray(), tol[dtype]);
      });

  test('batched with a residual: routed rows add to it, rows routed to none get it', () => {
    for (const [dtype, d, r] of [['bfloat16', 512, 32], ['float32', 200, 24]] as [F, number, number][]) {
      const A = 3;
      const N = 999;
      const s = seed();
      const st = {
        downWeight: randn([A, r, d], { seed: s, std: 1 / Math.sqrt(d), dtype }), downBias: randn([A, r], { seed: s + 1, std: 0.1, dtype }),
        upWeight: randn([A, d, r], { seed: s + 2, std: 1 / Math.sqrt(r), dtype }), upBias: randn([A, d], { seed: s + 3, std: 0.1, dtype }),
      };
      const rows = Int32Array.from({ length: N }, (_, i) => ((i * 31 + s) % (A + 1)) - 1);
      const x = randn([N, d], { seed: s + 4, dtype });
      const res = randn([N, d], { seed: s + 5, dtype });
      const g = (t: Tensor) => t.to(dev);
      poisonNext([N, d], dtype, dev);
      const got = adapterForwardBatched(g(x), { downWeight: g(st.downWeight), downBias: g(st.downBias), upWeight: g(st.upWeight), upBias: g(st.upBias) },
        rows, { scaling: [1, 0.5, 2], residual: g(res) }).out.toArray();
      const want = adapterForwardBatched(x, st, rows, { scaling: [1, 0.5, 2], residual: res }).out.toArray();
      expectNear(got, want, tol[dtype]);
    }
  });

  test('batched rows equal single-adapter CUDA runs exactly in structure', () => {
    const { gpu, xd } = make(64, 256, 32, 'bfloat16');
    const one = adapterForward(xd, gpu, { path: 'fused' }).out.toArray();
    const st = {
      downWeight: gpu.downWeight.reshape([1, 32, 256]), downBias: gpu.downBias.reshape([1, 32]),
      upWeight: gpu.upWeight.reshape([1, 256, 32]), upBias: gpu.upBias.reshape([1, 256]),
    };
    const b = adapterForwardBatched(xd, st, new Int32Array(64)).out.toArray();
    expectNear(b, one, 1e-2);
  });

  test('device and dtype mix give errors', () => {
    const { gpu, x } = make(8, 32, 16, 'float32');
    expect(() => adapterForward(x, gpu)).toThrow(/adapterForward: argument 'downWeight' is on cuda:0 but 'x' is on cpu/);
    expect(() => adapterForward(tensor(new Float32Array(8 * 32), [8, 32], { device: dev, dtype: 'bfloat16' }), gpu))
      .toThrow(/argument 'downWeight' is float32 but 'x' is bfloat16/);
  });
});
