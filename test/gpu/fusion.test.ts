// The CUDA AdapterFusion attention against the CPU op on fresh random inputs, outputs poisoned (NaN)
// first: outputs, probabilities and gradients, with and without dropout on the scores, fp32/bf16/fp16.
import { fusionAttention, fusionAttentionBackward, randn } from '../../lib';
import type { FloatDType } from '../../lib';
import { describeGpu, expectClose, poisonNext } from '../helpers';

const dev = 'cuda:0';
const SEED = Math.floor(Math.random() * 2 ** 31);

describeGpu(`CUDA fusionAttention matches the CPU (seed ${SEED})`, () => {
  const cases: [number, number, number, FloatDType, number, number][] = [
    [1, 1, 8, 'float32', 1, 0], [300, 3, 768, 'float32', 50, 0], [257, 5, 100, 'float32', 2, 0.2],
    [128, 32, 64, 'float32', 1, 0.1], [500, 4, 384, 'bfloat16', 1, 0], [64, 3, 128, 'float16', 3, 0.3],
  ];
  for (const [N, A, H, dtype, T, p] of cases)
    test(`N ${N}, ${A} adapters, H ${H}, ${dtype}, T ${T}, dropout ${p}`, () => {
      const q = randn([N, H], { seed: SEED, dtype, std: 0.3 });
      const k = randn([N, A, H], { seed: SEED + 1, dtype, std: 0.3 });
      const v = randn([N, A, H], { seed: SEED + 2, dtype });
      const d = randn([N, H], { seed: SEED + 3, dtype });
      const o = { temperature: T, dropout: p, seed: SEED % 9973 };
      const want = fusionAttention(q, k, v, o);
      const wantG = fusionAttentionBackward(d, q, k, v, want.probs, o);
      const [qd, kd, vd, dd] = [q, k, v, d].map((t) => t.to(dev));
      poisonNext([N, H], dtype, dev);
      const got = fusionAttention(qd, kd, vd, o);
      const tol = dtype === 'float32' ? 1e-5 : dtype === 'bfloat16' ? 3e-2 : 5e-3;
      expectClose(got.out.toArray(), want.out.toArray(), tol, tol);
      expectClose(got.probs.toArray(), want.probs.toArray(), 1e-5, 1e-5);
      poisonNext([N, H], dtype, dev);
      const g = fusionAttentionBackward(dd, qd, kd, vd, got.probs, o);
      expectClose(g.dq.toArray(), wantG.dq.toArray(), tol, tol);
      expectClose(g.dk.toArray(), wantG.dk.toArray(), tol, tol);
      expectClose(g.dv.toArray(), wantG.dv.toArray(), tol, tol);
    });

  test('more adapters than the kernel holds: a clear error', () => {
    const q = randn([2, 8]).to(dev);
    expect(() => fusionAttention(q, randn([2, 33, 8]).to(dev), randn([2, 33, 8]).to(dev))).toThrow(/CUDA fuses at most 32 adapters/);
  });
});
