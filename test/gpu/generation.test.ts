// The CUDA generation kernels against the CPU ops on fresh random inputs, outputs poisoned (NaN)
// first: decode attention over a shuffled paged cache (grouped-query heads, lengths crossing pages,
// empty sequences, long sequences split in parts), the cache write, and the sampler (the same tokens
// from the same logits and draws); then generation on CUDA gives the CPU's tokens, greedy and seeded.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { cacheScatter, decodeAttention, empty, generate, loadDecoder, randn, sampleTokens, tensor } from '../../lib';
import type { FloatDType } from '../../lib';
import { writeTinyLlama } from '../decoderFixture';
import { pagedCase, paramsTensor, SampleParams } from '../generationRef';
import { describeGpu, expectClose, poisonNext, rng } from '../helpers';

const dev = 'cuda:0';
const SEED = Math.floor(Math.random() * 2 ** 31);

describeGpu(`CUDA generation kernels match the CPU (seed ${SEED})`, () => {
  const cases: [number, number, number, number, number, number[], FloatDType][] = [
    [1, 1, 1, 32, 16, [1], 'float32'],
    [3, 9, 3, 64, 16, [1, 37, 300], 'float32'],
    [4, 32, 8, 128, 16, [0, 5000, 17, 1024], 'float32'],
    [2, 8, 2, 80, 3, [50, 7], 'float32'],
    [2, 16, 4, 256, 32, [600, 33], 'bfloat16'],
    [3, 12, 4, 64, 8, [129, 1, 64], 'float16'],
  ];
  for (const [B, Hq, Hkv, D, ps, lengths, dtype] of cases)
    test(`decodeAttention ${dtype} B ${B}, heads ${Hq}/${Hkv}, D ${D}, pages of ${ps}, lengths ${lengths}`, () => {
      const c = pagedCase(SEED + D + B, B, Hq, Hkv, D, ps, lengths, dtype, false);
      const want = decodeAttention(c.q, c.kPool, c.vPool, c.pageTable, c.seqLens, ps, c.maxLength).toArray();
      const tol = dtype === 'float32' ? 2e-5 : dtype === 'bfloat16' ? 2e-2 : 3e-3;
      for (const splits of [undefined, 1, 3]) {
        poisonNext([B, Hq, D], dtype, dev);
        const got = decodeAttention(c.q.to(dev), c.kPool.to(dev), c.vPool.to(dev), c.pageTable.to(dev), c.seqLens.to(dev), ps, c.maxLength, { splits });
        expectClose(got.toArray(), want, tol, tol);
      }
    });

  test('cacheScatter: the CPU result, rows at −1 or outside the pool skipped', () => {
    const init = randn([40, 3, 64], { seed: SEED });
    const src = randn([7, 3, 64], { seed: SEED + 1 });
    const slots = [3, -1, 39, 0, 17, -1, 5];
    const cpu = init.to('cpu');
    cacheScatter(cpu, src, tensor(slots, [7], { dtype: 'int32' }));
    const gpu = init.to(dev);
    cacheScatter(gpu, src.to(dev), tensor([...slots.slice(0, 5), 4000, 5], [7], { dtype: 'int32', device: dev }));
    expect(Array.from(gpu.toArray())).toEqual(Array.from(cpu.toArray()));
  });

  for (const dtype of ['float32', 'bfloat16'] as FloatDType[])
    test(`sampleTokens ${dtype}: the CPU's tokens for the same logits and draws`, () => {
      const r = rng(SEED);
      for (let trial = 0; trial < 12; trial++) {
        const B = 1 + Math.floor(r.uniform() * 16);
        const V = trial % 3 === 0 ? 49152 : 1 + Math.floor(r.uniform() * 5000);
        const logits = tensor(Float32Array.from(r.array(B * V, 2)), [B, V], { dtype });
        const ps: SampleParams[] = Array.from({ length: B }, () => ({
          temperature: r.uniform() < 0.25 ? 0 : 0.3 + 1.5 * r.uniform(), topK: r.uniform() < 0.5 ? 0 : 1 + Math.floor(r.uniform() * 100),
          topP: r.uniform() < 0.5 ? 1 : 0.5 + 0.5 * r.uniform(), penalty: r.uniform() < 0.5 ? 1 : 1.3, u: r.uniform(),
        }));
        const ids = tensor(Array.from({ length: B * 4 }, (_, i) => (i % 4 === 3 ? -1 : (i * 7919) % V)), [B, 4], { dtype: 'int32' });
        const want = Array.from(sampleTokens(logits, paramsTensor(ps), ids).toArray());
        poisonNext([B], 'float32', dev);
        const got = Array.from(sampleTokens(logits.to(dev), paramsTensor(ps, dev), ids.to(dev)).toArray());
        expect({ trial, got }).toEqual({ trial, got: want });
      }
    });

  test('generation on CUDA gives the CPU\'s tokens: greedy, seeded sampling, a batch of different lengths', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-gpu-gen-'));
    try {
      const file = writeTinyLlama(dir, SEED);
      const cpu = await loadDecoder(file, { device: 'cpu' });
      const gpu = await loadDecoder(file, { device: dev });
      const prompts = [[5, 17, 3], [8, 1, 44, 90, 12, 7, 2, 2, 9, 31, 4, 4, 4, 6, 8, 1, 22], [60]];
      for (const o of [{ maxNewTokens: 20 }, { maxNewTokens: 20, temperature: 0.9, topK: 30, topP: 0.9, repetitionPenalty: 1.1, seed: 7 }])
        expect(await generate(gpu, prompts, o)).toEqual(await generate(cpu, prompts, o));
      cpu.dispose();
      gpu.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('empty outputs are written: an all-empty batch gives zeros', () => {
    const q = randn([2, 4, 64], { device: dev });
    const pool = empty([16, 2, 64], { device: dev });
    poisonNext([2, 4, 64], 'float32', dev);
    const out = decodeAttention(q, pool, pool, tensor([0, 0], [2, 1], { dtype: 'int32', device: dev }), tensor([0, 0], [2], { dtype: 'int32', device: dev }), 16, 0);
    expect(Array.from(out.toArray()).every((x) => x === 0)).toBe(true);
  });
});
