// The real pre-trained all-MiniLM-L6-v2 on CUDA against the CPU: a padded batch, each AdapterHub
// placement with random (non-zero) adapter and head weights copied into both models, forward with
// labels and backward. fp32 on CUDA vs fp32 on the CPU ≤ 1e-4; bf16 backbone on CUDA ≤ 3e-2
// (norm-wise). Needs a GPU and the reference environment's MiniLM; skipped, with the reason, without.
import { Backbone, loadBackbone, randn } from '../../lib';
import type { FloatDType } from '../../lib';
import { cudaUsable, relErr } from '../helpers';
import { referenceEnv, referenceSkipReason } from '../reference/env';

const dev = 'cuda:0';
const why = !cudaUsable ? 'no usable CUDA device' : !referenceEnv ? referenceSkipReason : '';
const describeHere = why ? describe.skip : describe;
if (why) console.warn(`skipped 'MiniLM on CUDA vs CPU': ${why}`);

function batch(seed: number) {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const B = 5, T = 17;
  const inputIds: number[][] = [], attentionMask: number[][] = [], tokenTypeIds: number[][] = [];
  for (let b = 0; b < B; b++) {
    const n = b === 0 ? T : 3 + Math.floor(next() * (T - 3));
    inputIds.push(Array.from({ length: T }, (_, t) => (t === 0 ? 101 : t < n - 1 ? 1000 + Math.floor(next() * 29000) : t === n - 1 ? 102 : 0)));
    attentionMask.push(Array.from({ length: T }, (_, t) => (t < n ? 1 : 0)));
    tokenTypeIds.push(Array.from({ length: T }, (_, t) => (t >= n / 2 && t < n ? 1 : 0)));
  }
  return { inputs: { inputIds, attentionMask, tokenTypeIds }, labels: Array.from({ length: B }, (_, b) => b % 3) };
}

describeHere('MiniLM on CUDA vs CPU', () => {
  let cpu: Backbone;
  beforeAll(async () => {
    cpu = await loadBackbone(referenceEnv!.minilm, { device: 'cpu', dtype: 'float32' });
  });
  afterAll(() => cpu?.dispose());

  for (const [dtype, tol] of [['float32', 1e-4], ['bfloat16', 3e-2]] as [FloatDType, number][]) {
    for (const config of ['seq_bn', 'double_seq_bn', 'par_bn']) {
      test(`${config}, ${dtype} backbone on CUDA`, async () => {
        const gpu = await loadBackbone(referenceEnv!.minilm, { device: dev, dtype });
        try {
          const seed = (Date.now() % 100000) + 1;
          for (const m of [cpu, gpu]) {
            m.addAdapter('t', config);
            m.addClassificationHead('t', { numLabels: 3 });
            m.trainAdapter('t');
            m.setActiveHead('t');
          }
          // the same random weights in both (fresh each run), so nothing is zero or the identity
          let k = 0;
          for (const [name, p] of cpu.namedParameters()) {
            const v = randn(p.shape, { seed: seed + k++, std: name.endsWith('scaling') ? 0 : 0.1, mean: name.endsWith('scaling') ? 1 : 0 }).toArray();
            p.copyFrom(v);
            gpu.namedParameters().get(name)!.copyFrom(v);
          }
          const { inputs, labels } = batch(seed);
          const rc = cpu.forward(inputs, { labels });
          const rg = gpu.forward(inputs, { labels });
          expect(relErr(rg.lastHiddenState.toArray(), rc.lastHiddenState.toArray())).toBeLessThan(tol);
          expect(relErr(rg.logits!.toArray(), rc.logits!.toArray())).toBeLessThan(tol);
          cpu.backward(rc);
          gpu.backward(rg);
          const gc = cpu.grads();
          const gg = gpu.grads();
          expect([...gg.keys()].sort()).toEqual([...gc.keys()].sort());
          for (const [name, g] of gc) expect(relErr(gg.get(name)!.toArray(), g.toArray())).toBeLessThan(dtype === 'float32' ? 1e-3 : 5e-2);
          rc.dispose();
          rg.dispose();
        } finally {
          cpu.deleteAdapter('t');
          cpu.deleteHead('t');
          gpu.dispose();
        }
      }, 300_000);
    }
  }
});
