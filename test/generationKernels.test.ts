// The generation kernels on the CPU: decode attention over a paged cache equals the plain attention
// op over the same keys laid out contiguously (grouped-query heads, shuffled pages, empty and
// page-crossing sequences, any split); the cache write; the paged cache's bookkeeping; the sampler
// against its definition computed by sorting, in distribution and on edge cases; bad arguments.
import { attention, cacheScatter, decodeAttention, empty, loadDecoder, PagedKVCache, randn, sampleTokens, tensor } from '../lib';
import type { FloatDType } from '../lib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { writeTinyLlama } from './decoderFixture';
import { pagedCase, paramsTensor, sampleRef, SampleParams } from './generationRef';
import { expectClose, rng } from './helpers';

const SEED = Math.floor(Math.random() * 2 ** 31);

describe(`decode attention over a paged cache (seed ${SEED})`, () => {
  const cases: [string, number, number, number, number, number, number[], FloatDType][] = [
    ['one head, one page', 1, 1, 1, 8, 16, [5], 'float32'],
    ['GQA 9/3, pages of 16, mixed lengths', 3, 9, 3, 64, 16, [1, 37, 16], 'float32'],
    ['GQA 4/1, pages of 1', 2, 4, 1, 32, 1, [9, 3], 'float32'],
    ['pages of 3, an empty sequence', 3, 2, 2, 16, 3, [0, 7, 12], 'float32'],
    ['a long sequence (split along it)', 1, 6, 2, 64, 16, [2500], 'float32'],
    ['bfloat16', 2, 8, 2, 64, 8, [40, 17], 'bfloat16'],
    ['float16, head size 80', 2, 4, 4, 80, 5, [11, 29], 'float16'],
  ];
  for (const [name, B, Hq, Hkv, D, ps, lengths, dtype] of cases)
    test(`${name}: equals attention() over the contiguous keys, for any number of parts`, () => {
      const c = pagedCase(SEED + B * 31 + D, B, Hq, Hkv, D, ps, lengths, dtype);
      const scale = 0.7 / Math.sqrt(D);
      const want = attention(c.q.reshape([B, Hq, 1, D]), c.k, c.v, { keyMask: c.keyMask, scale }).out.toArray();
      const tol = dtype === 'float32' ? 1e-5 : dtype === 'bfloat16' ? 2e-2 : 3e-3;
      for (const splits of [undefined, 1, 2, 7]) {
        const got = decodeAttention(c.q, c.kPool, c.vPool, c.pageTable, c.seqLens, ps, c.maxLength, { scale, splits });
        expect(got.shape).toEqual([B, Hq, D]);
        expect(got.dtype).toBe(dtype);
        expectClose(got.toArray(), want, tol, tol);
      }
      lengths.forEach((len, b) => {
        if (len === 0) expect(Array.from(decodeAttention(c.q, c.kPool, c.vPool, c.pageTable, c.seqLens, ps, c.maxLength).toArray().slice(b * Hq * D, (b + 1) * Hq * D)).every((x) => x === 0)).toBe(true);
      });
    });

  test('bad arguments get clear errors', () => {
    const c = pagedCase(SEED, 2, 4, 2, 8, 4, [5, 3]);
    const call = (o: Partial<typeof c> & { ps?: number; max?: number } = {}) => () =>
      decodeAttention(o.q ?? c.q, o.kPool ?? c.kPool, o.vPool ?? c.vPool, o.pageTable ?? c.pageTable, o.seqLens ?? c.seqLens, o.ps ?? 4, o.max ?? c.maxLength);
    expect(call({ seqLens: tensor([5, 9], [2], { dtype: 'int32' }), max: 8 })).toThrow('decodeAttention: seqLens[1] = 9 is outside [0, maxLength = 8]');
    expect(call({ max: 99 })).toThrow(/argument 'maxLength' must be an integer in \[0, 8\]/);
    expect(call({ pageTable: tensor([0, 99, 1, -1], [2, 2], { dtype: 'int32' }) })).toThrow(/decodeAttention: page 99 \(sequence 0, entry 1\) is outside the pool's \d+ pages/);
    expect(call({ ps: 5 })).toThrow('decodeAttention: the pools\' 24 rows are not a whole number of pages of 5');
    expect(call({ q: randn([2, 3, 8]) })).toThrow('decodeAttention: the query heads (3) must be a multiple of the key/value heads (2)');
    expect(call({ q: randn([2, 4, 16]) })).toThrow("decodeAttention: argument 'kPool' has head size 8, 'q' 16");
    expect(call({ vPool: randn(c.vPool.shape, { dtype: 'bfloat16' }) })).toThrow(/vPool/);
    expect(call({ seqLens: tensor([5, 3], [2]) })).toThrow(/seqLens/);
  });
});

describe('the paged cache', () => {
  test('cacheScatter writes rows at their slots, skips −1 and refuses slots outside the pool', () => {
    const pool = empty([6, 2, 3]);
    pool.copyFrom(new Float32Array(36).fill(-7));
    const src = randn([3, 2, 3], { seed: SEED });
    cacheScatter(pool, src, tensor([4, -1, 0], [3], { dtype: 'int32' }));
    const p = pool.toArray();
    const s = src.toArray();
    expect(Array.from(p.slice(24, 30))).toEqual(Array.from(s.slice(0, 6)));
    expect(Array.from(p.slice(0, 6))).toEqual(Array.from(s.slice(12, 18)));
    expect(Array.from(p.slice(6, 24)).every((x) => x === -7)).toBe(true);
    expect(() => cacheScatter(pool, src, tensor([4, 6, 0], [3], { dtype: 'int32' }))).toThrow('cacheScatter: slot 6 (row 1) is outside the pool of 6 rows');
    expect(() => cacheScatter(pool, randn([3, 3, 2]), tensor([0, 1, 2], [3], { dtype: 'int32' }))).toThrow(/whose rows do not fit 'pool'/);
  });

  test('sequences take pages as they grow, give them back, and a full pool says so', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-paged-'));
    try {
      const model = await loadDecoder(writeTinyLlama(dir, SEED), { device: 'cpu' });
      const cache = new PagedKVCache(model, { pages: 4, pageSize: 4 });
      const a = cache.add();
      const b = cache.add();
      cache.reserve(a, 5);
      expect(cache.freePages).toBe(2);
      cache.advance(a, 5);
      cache.reserve(a, 3); // still inside its second page
      expect(cache.freePages).toBe(2);
      expect(() => cache.reserve(b, 9)).toThrow('cache: 9 tokens need 3 more pages of 4 tokens, and 2 of 4 are free');
      cache.release(a);
      expect(cache.freePages).toBe(4);
      cache.reserve(b, 9);
      expect(cache.pageTable([b]).maxPages).toBe(3);
      expect(cache.bytesPerToken).toBe(2 * model.config.numLayers * model.config.numKvHeads * model.config.headDim * 4);
      cache.dispose();
      model.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe(`sampling on the device (seed ${SEED})`, () => {
  test('random rows and options: the token its definition gives (computed by sorting)', () => {
    const r = rng(SEED);
    for (let trial = 0; trial < 40; trial++) {
      const B = 1 + Math.floor(r.uniform() * 5);
      const V = 1 + Math.floor(r.uniform() * 3000);
      const logits = Float32Array.from(r.array(B * V, 1 + 3 * r.uniform()));
      const ps: SampleParams[] = Array.from({ length: B }, () => ({
        temperature: r.uniform() < 0.2 ? 0 : 0.3 + 2 * r.uniform(),
        topK: r.uniform() < 0.4 ? 0 : 1 + Math.floor(r.uniform() * V * 1.2),
        topP: r.uniform() < 0.4 ? 1 : 0.05 + 0.95 * r.uniform(),
        penalty: r.uniform() < 0.5 ? 1 : 0.5 + 1.5 * r.uniform(),
        u: r.uniform(),
      }));
      const pen = ps.map(() => [...new Set(Array.from({ length: 1 + Math.floor(r.uniform() * 6) }, () => Math.floor(r.uniform() * V)))]);
      const P = Math.max(...pen.map((p) => p.length));
      const ids = tensor(pen.flatMap((p) => [...p, ...new Array(P - p.length).fill(-1)]), [B, P], { dtype: 'int32' });
      const got = Array.from(sampleTokens(tensor(logits, [B, V]), paramsTensor(ps), ids).toArray());
      const want = ps.map((p, b) => sampleRef(logits.subarray(b * V, (b + 1) * V), p, pen[b]));
      expect({ trial, got }).toEqual({ trial, got: want });
    }
  });

  test('draws follow the kept probabilities: u on a grid gives each token its share', () => {
    const logits = [0.5, 2, -1, 1.5, 0.2, 2];
    const N = 4000;
    for (const [T, topK, topP] of [[1, 0, 1], [0.7, 3, 1], [1.3, 0, 0.8]]) {
      const ps = Array.from({ length: N }, (_, i) => ({ temperature: T, topK, topP, penalty: 1, u: (i + 0.5) / N }));
      const got = Array.from(sampleTokens(tensor(new Array(N).fill(logits).flat(), [N, 6]), paramsTensor(ps)).toArray());
      // the kept set and probabilities, by hand
      const z = logits.map((l) => l / T);
      const kth = topK ? [...z].sort((a, b) => b - a)[topK - 1] : -Infinity;
      const w = z.map((v) => (v >= kth ? Math.exp(v - Math.max(...z)) : 0));
      const order = w.map((_, i) => i).sort((a, b) => w[b] - w[a]);
      const total = w.reduce((a, b) => a + b, 0);
      let acc = 0;
      const keep = new Set<number>();
      for (const i of order) {
        if (acc >= topP * total) break;
        keep.add(i);
        acc += w[i];
      }
      for (const i of order) if (w[i] === w[[...keep].pop()!]) keep.add(i); // ties kept
      const kept = w.map((x, i) => (keep.has(i) ? x : 0));
      const Z = kept.reduce((a, b) => a + b, 0);
      for (let v = 0; v < 6; v++) expect(Math.abs(got.filter((t) => t === v).length - (N * kept[v]) / Z)).toBeLessThanOrEqual(1);
    }
  });

  test('greedy takes the first largest; NaN is never chosen; a row without a finite logit gives −1; the penalty as transformers defines it', () => {
    const g = (row: number[], p: Partial<SampleParams> = {}, pen?: number[]) => sampleTokens(tensor(row, [1, row.length]),
      paramsTensor([{ temperature: 0, topK: 0, topP: 1, penalty: 1, u: 0.5, ...p }]),
      pen ? tensor(pen, [1, pen.length], { dtype: 'int32' }) : undefined).toArray()[0];
    expect(g([1, 3, 3, 2])).toBe(1);
    expect(g([NaN, 1, NaN, 0])).toBe(1);
    expect(g([NaN, -Infinity])).toBe(-1);
    expect(g([NaN, NaN], { temperature: 1 })).toBe(-1);
    expect(g([2, 1.5], {}, [0])).toBe(0); // penalty 1: nothing changes
    expect(g([2, 1.5], { penalty: 1.5 }, [0, -1])).toBe(1); // 2 / 1.5 < 1.5
    expect(g([-1, -1.2], { penalty: 1.5 }, [0])).toBe(1); // −1 · 1.5 < −1.2
    expect(g([0, 5, 1], { temperature: 1, topK: 1, u: 0.999 })).toBe(1);
    expect(g([0, 5, 1], { temperature: 5, topP: 1e-6, u: 0.999 })).toBe(1);
  });

  test('bad arguments get clear errors', () => {
    const l = randn([2, 10]);
    expect(() => sampleTokens(l, randn([2, 4]))).toThrow("sampleTokens: argument 'params' has shape [2, 4], expected [2, 5]");
    expect(() => sampleTokens(l, randn([2, 5], { dtype: 'bfloat16' }))).toThrow("sampleTokens: argument 'params' must be float32, got bfloat16");
    expect(() => sampleTokens(randn([10]), randn([1, 5]))).toThrow("sampleTokens: argument 'logits' must be [B, vocab], got shape [10]");
    expect(() => sampleTokens(l, randn([2, 5]), tensor([1, 2], [2], { dtype: 'int32' }))).toThrow(/penaltyIds' must be \[B, n\]/);
  });
});
