// Promise-returning forms of the heavy ops: the same results as the synchronous ones, the event loop
// running while they compute on the CPU, inputs that may be disposed meanwhile, errors as rejections.
import { adapterBackward, adapterBackwardAsync, adapterForward, adapterForwardAsync, matmul, matmulAsync, randn } from '../lib';

const SEED = Math.floor(Math.random() * 2 ** 31);

describe(`async ops (seed ${SEED})`, () => {
  test('matmulAsync: the same product; the event loop turns while a large GEMM runs; inputs may be disposed', async () => {
    const a = randn([37, 53], { seed: SEED });
    const b = randn([29, 53], { seed: SEED + 1 });
    const want = Array.from(matmul(a, b, { transB: true }).toArray());
    const pending = matmulAsync(a, b, { transB: true });
    a.dispose();
    b.dispose();
    expect(Array.from((await pending).toArray())).toEqual(want);
    const big = randn([1024, 1024], { seed: SEED + 2 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const runs = [];
    for (let i = 0; i < 8; i++) runs.push(matmulAsync(big, big));
    for (const t of await Promise.all(runs)) t.dispose();
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    await expect(matmulAsync(randn([2, 3]), randn([4, 5]))).rejects.toThrow(/matmul: inner dimensions differ/);
  });

  for (const dtype of ['float32', 'bfloat16'] as const)
    test(`adapterForwardAsync / adapterBackwardAsync ${dtype}: bit for bit the synchronous results, dropout included`, async () => {
      const [N, d, r] = [300, 96, 12];
      const x = randn([N, d], { seed: SEED, dtype });
      const w = {
        downWeight: randn([r, d], { seed: SEED + 1, dtype, std: 0.2 }), downBias: randn([r], { seed: SEED + 2, dtype }),
        upWeight: randn([d, r], { seed: SEED + 3, dtype, std: 0.2 }), upBias: randn([d], { seed: SEED + 4, dtype }),
      };
      const opts = { activation: 'gelu' as const, scaling: 0.7, training: true, dropout: 0.2, seed: 5 };
      const f = adapterForward(x, w, opts);
      const fa = await adapterForwardAsync(x, w, opts);
      expect(Array.from(fa.out.toArray())).toEqual(Array.from(f.out.toArray()));
      expect(Array.from(fa.saved.hPre.toArray())).toEqual(Array.from(f.saved.hPre.toArray()));
      const dOut = randn([N, d], { seed: SEED + 5, dtype });
      const g = adapterBackward(dOut, f.saved);
      const ga = await adapterBackwardAsync(dOut, fa.saved);
      for (const k of ['dx', 'dDownWeight', 'dDownBias', 'dUpWeight', 'dUpBias'] as const)
        expect(Array.from(ga[k].toArray())).toEqual(Array.from(g[k].toArray()));
      await expect(adapterForwardAsync(randn([4, 7]), w)).rejects.toThrow(/adapterForward/);
    });
});
