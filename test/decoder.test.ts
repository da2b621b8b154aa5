// Decoders on the CPU without Python (the parity with transformers is in test/reference/):
// padding on either side changes nothing for the real tokens, grouped-query attention equals
// multi-head attention with the K/V heads repeated, the loss ignores what it should, and bad
// configs, files and inputs are refused with errors that name them.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadDecoder, NonFiniteError, placeInHubCache } from '../lib';
import type { Decoder } from '../lib';
import { SafetensorsFile, TensorToWrite } from '../lib/io/safetensors';
import { writeTinyGpt2, writeTinyLlama } from './decoderFixture';
import { expectClose } from './helpers';

const SEED = process.env.FA_TEST_SEED ? Number(process.env.FA_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
let work: string;
let n = 0;
const dirOf = () => path.join(work, `m${n++}`);
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-decoder-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Logits of row b at its real positions. */
function realLogits(model: Decoder, ids: number[][], mask: number[][], b: number): Float32Array[] {
  const out = model.forward({ inputIds: ids, attentionMask: mask });
  const [, T, V] = out.logits.shape;
  const all = out.logits.toArray();
  out.dispose();
  const rows: Float32Array[] = [];
  for (let t = 0; t < T; t++) if (mask[b][t]) rows.push(all.slice((b * T + t) * V, (b * T + t + 1) * V));
  return rows;
}

describe(`decoders (seed ${SEED})`, () => {
  for (const [arch, write] of [['llama', writeTinyLlama], ['gpt2', writeTinyGpt2]] as const)
    test(`${arch}: left and right padding leave the real tokens' logits unchanged`, async () => {
      const model = await loadDecoder(write(dirOf(), SEED), { device: 'cpu' });
      const seq = [5, 17, 3, 44, 90, 2];
      const alone = realLogits(model, [seq], [seq.map(() => 1)], 0);
      const left = realLogits(model, [[0, 0, 0, ...seq], [1, 2, 3, 4, 5, 6, 7, 8, 9]], [[0, 0, 0, 1, 1, 1, 1, 1, 1], new Array(9).fill(1)], 0);
      const right = realLogits(model, [[...seq, 0, 0], [9, 8, 7, 6, 5, 4, 3, 2]], [[1, 1, 1, 1, 1, 1, 0, 0], new Array(8).fill(1)], 0);
      expect(left).toHaveLength(seq.length);
      for (let t = 0; t < seq.length; t++) {
        expectClose(left[t], alone[t], 1e-5, 1e-5);
        expectClose(right[t], alone[t], 1e-5, 1e-5);
      }
      model.dispose();
    });

  test('grouped-query attention equals multi-head attention with each K/V head repeated for its query heads', async () => {
    const gqaDir = writeTinyLlama(dirOf(), SEED, { kvHeads: 2 });
    const st = SafetensorsFile.open(path.join(gqaDir, 'model.safetensors'));
    const [H, heads, kv] = [48, 4, 2];
    const dh = H / heads;
    const mhaDir = writeTinyLlama(dirOf(), SEED, {
      kvHeads: 4,
      edit: (t: Record<string, TensorToWrite>) => {
        for (const name of st.names()) {
          const data = st.getFloat32(name);
          if (/self_attn\.[kv]_proj\.weight$/.test(name)) {
            // head j of the 4 is head floor(j / 2) of the 2 (query head h uses K/V head h / G)
            const rep = new Float32Array(heads * dh * H);
            for (let j = 0; j < heads; j++) rep.set(data.subarray(Math.floor(j / (heads / kv)) * dh * H, (Math.floor(j / (heads / kv)) + 1) * dh * H), j * dh * H);
            t[name] = { dtype: 'F32', shape: [heads * dh, H], data: rep };
          } else t[name] = { dtype: 'F32', shape: st.info(name).shape, data };
        }
      },
    });
    const ids = [[3, 14, 15, 92, 65, 35, 89], [7, 93, 23, 84, 62, 64, 33]];
    const a = await loadDecoder(gqaDir, { device: 'cpu' });
    const b = await loadDecoder(mhaDir, { device: 'cpu' });
    expect([a.config.numKvHeads, b.config.numKvHeads]).toEqual([2, 4]);
    const la = a.forward({ inputIds: ids });
    const lb = b.forward({ inputIds: ids });
    expectClose(la.logits.toArray(), lb.logits.toArray(), 1e-5, 1e-6);
    for (const x of [la, lb, a, b]) x.dispose();
  });

  test('the loss: position t predicts labels[t + 1]; -100 does not count; the mean over what counts', async () => {
    const model = await loadDecoder(writeTinyGpt2(dirOf(), SEED), { device: 'cpu' });
    const ids = [[4, 8, 15, 16, 23, 42]];
    const out = model.forward({ inputIds: ids }, { labels: [[-100, -100, 15, 16, -100, 42]] });
    const V = model.config.vocabSize;
    const logits = out.logits.toArray();
    const ce = (t: number, label: number) => {
      const row = Array.from(logits.slice(t * V, (t + 1) * V));
      const mx = Math.max(...row);
      return Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0)) + mx - row[label];
    };
    // targets: position 1 → 15, position 2 → 16, position 4 → 42
    expect(out.lossValue!).toBeCloseTo((ce(1, 15) + ce(2, 16) + ce(4, 42)) / 3, 5);
    out.dispose();
    model.dispose();
  });

  test('bad inputs, configs and files name what is wrong', async () => {
    const llama = await loadDecoder(writeTinyLlama(dirOf(), SEED), { device: 'cpu' });
    expect(() => llama.forward({ inputIds: [[1, 97]] })).toThrow('forward: token id 97 is outside [0, 97)');
    expect(() => llama.forward({ inputIds: [[1, 2], [3]] })).toThrow(/rows must all have the same, non-zero length/);
    expect(() => llama.forward({ inputIds: [[1, 2]], attentionMask: [[1, 1, 1]] })).toThrow(/attentionMask is \[1, 3\], the input ids are \[1, 2\]/);
    expect(() => llama.forward({ inputIds: [[1, 2]] }, { labels: [[1, 500]] })).toThrow(/label 500 is outside \[0, 97\)/);
    llama.dispose();
    await expect(loadDecoder(writeTinyLlama(dirOf(), SEED, { config: { num_key_value_heads: 3 } }), { device: 'cpu' }))
      .rejects.toThrow(/num_attention_heads 4 is not a multiple of num_key_value_heads 3/);
    await expect(loadDecoder(writeTinyLlama(dirOf(), SEED, { config: { rope_scaling: { rope_type: 'yarn', factor: 4 } } }), { device: 'cpu' }))
      .rejects.toThrow(/rope type 'yarn' is not supported \(default, linear, llama3\)/);
    await expect(loadDecoder(writeTinyLlama(dirOf(), SEED, { config: { num_hidden_layers: 5000000 } }), { device: 'cpu' }))
      .rejects.toThrow(/num_hidden_layers must be an integer in \[1, 1000\]/);
    await expect(loadDecoder(writeTinyLlama(dirOf(), SEED, { config: { num_hidden_layers: 3 } }), { device: 'cpu' }))
      .rejects.toThrow(/config.json says num_hidden_layers: 3, but the weights hold 2 layer\(s\)/);
    await expect(loadDecoder(writeTinyGpt2(dirOf(), SEED, { edit: (t) => { delete t['transformer.ln_f.bias']; } }), { device: 'cpu' }))
      .rejects.toThrow(/lacks tensor 'transformer\.ln_f\.bias'/);
    await expect(loadDecoder(writeTinyLlama(dirOf(), SEED, { config: { intermediate_size: 81 } }), { device: 'cpu' }))
      .rejects.toThrow(/mlp\.gate_proj\.weight' has shape \[80, 48\], the config needs \[81, 48\]/);
    const windowed = await loadDecoder(writeTinyLlama(dirOf(), SEED, { config: { model_type: 'mistral', sliding_window: 4 } }), { device: 'cpu' });
    expect(() => windowed.forward({ inputIds: [[1, 2, 3, 4, 5]] })).toThrow(/5 tokens exceed the sliding window of 4/);
    expect(windowed.forward({ inputIds: [[1, 2, 3, 4]] }).logits.shape).toEqual([1, 4, 97]);
    windowed.dispose();
  });

  test('a decoder from the Hugging Face cache by repo id, offline, equals the same directory loaded directly', async () => {
    const dir = writeTinyLlama(dirOf(), SEED);
    const cacheDir = path.join(work, 'hub-cache');
    await placeInHubCache(dir, 'tiny-org/tiny-llama', { cacheDir });
    const fromHub = await loadDecoder('tiny-org/tiny-llama', { device: 'cpu', cacheDir, offline: true });
    const direct = await loadDecoder(dir, { device: 'cpu' });
    expect(fromHub.modelName).toBe('tiny-org/tiny-llama');
    expect(fromHub.weightHash).toBe(direct.weightHash);
    const ids = [[1, 2, 3, 4]];
    expect(Array.from(fromHub.forward({ inputIds: ids }).logits.toArray())).toEqual(Array.from(direct.forward({ inputIds: ids }).logits.toArray()));
    await expect(loadDecoder('tiny-org/missing', { device: 'cpu', cacheDir, offline: true })).rejects.toThrow(/tiny-org\/missing/);
    fromHub.dispose();
    direct.dispose();
  });

  test('NaN in the weights: forward names the layer and block where it first appears; sft stops on it or skips', async () => {
    const dir = writeTinyLlama(dirOf(), SEED, { edit: (t) => { (t['model.layers.1.mlp.down_proj.weight'].data as Float32Array)[3] = NaN; } });
    const model = await loadDecoder(dir, { device: 'cpu', allowNonFinite: true });
    let err: unknown = null;
    try {
      model.forward({ inputIds: [[1, 2, 3]] }, { labels: [[1, 2, 3]] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NonFiniteError);
    expect([(err as NonFiniteError).layer, (err as NonFiniteError).op]).toEqual([1, 'mlp']);
    expect((err as Error).message).toMatch(/^forward: non-finite values \(NaN at element \d+ of \[1, 3, 48\]\) first appear in layer 1, mlp/);
    expect(model.forward({ inputIds: [[1, 2, 3]] }, { checkFinite: false }).logits.toArray().some(Number.isNaN)).toBe(true);
    model.dispose();
  });

  test('gradient checkpointing gives the same adapter gradients (bitwise) and keeps fewer tensors alive', async () => {
    const dir = writeTinyLlama(dirOf(), SEED, { layers: 3 });
    const model = await loadDecoder(dir, { device: 'cpu' });
    model.addAdapter('a', { config: 'double_seq_bn', reductionFactor: 4 }, { seed: 5 });
    for (const t of model.adapterParameters('a').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.sin(i + t.size) * 0.1));
    model.trainAdapter('a');
    const ids = [[0, 5, 9, 13, 21], [34, 55, 89, 14, 23]];
    const inputs = { inputIds: ids, attentionMask: [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]] };
    const labels = [[-100, -100, 9, 13, 21], [-100, 55, 89, 14, 23]];
    const grads = (checkpointing: boolean) => {
      const out = model.forward(inputs, { labels, checkpointing, seed: 3 });
      const live = (out._scope as unknown as { tensors: unknown[] }).tensors.length;
      model.backward(out);
      out.dispose();
      const g = new Map([...model.grads()].map(([k, t]) => [k, Array.from(t.toArray())]));
      model.zeroGrad();
      return { g, live };
    };
    const plain = grads(false);
    const ck = grads(true);
    expect(ck.live).toBeLessThan(plain.live / 3);
    for (const [k, v] of plain.g) expect(ck.g.get(k)).toEqual(v);
    model.dispose();
  });

  test('keepLogits: false computes the loss over vocabulary chunks: the same loss and adapter gradients, no logits kept', async () => {
    const dir = writeTinyLlama(dirOf(), SEED, { vocab: 701 });
    const model = await loadDecoder(dir, { device: 'cpu' });
    model.addAdapter('a', { config: 'seq_bn', reductionFactor: 4 }, { seed: 5 });
    for (const t of model.adapterParameters('a').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.cos(i * 7 + t.size) * 0.1));
    model.trainAdapter('a');
    const ids = [[0, 5, 9, 13, 21, 77, 8], [34, 55, 89, 14, 23, 700, 2]];
    const inputs = { inputIds: ids, attentionMask: [[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]] };
    const labels = [[-100, -100, 9, 13, -100, 77, 8], [-100, 55, 89, 14, 23, 700, 2]];
    const run = (keepLogits: boolean) => {
      const out = model.forward(inputs, { labels, keepLogits, lossChunkRows: 3 }); // 14 rows: 5 chunks, one without labels
      const loss = out.lossValue!;
      expect(out.hasLogits).toBe(keepLogits);
      if (!keepLogits) expect(() => out.logits).toThrow(/did not keep them/);
      model.backward(out);
      out.dispose();
      const g = new Map([...model.grads()].map(([k, t]) => [k, t.toArray()]));
      model.zeroGrad();
      return { loss, g };
    };
    const full = run(true);
    const chunked = run(false);
    expect(chunked.loss).toBeCloseTo(full.loss, 5);
    // the chunks sum the same terms in another order: an element near 0 is off by ~1e-5 of the gradient's scale
    for (const [k, v] of full.g) expectClose(chunked.g.get(k)!, v, 1e-4, 1e-4 * Math.max(...Array.from(v, Math.abs)));
    model.dispose();
  });

  for (const [arch, write] of [['llama', writeTinyLlama], ['gpt2', writeTinyGpt2]] as const)
    test(`${arch}: the fused attention path gives the unfused path's logits, loss and adapter gradients`, async () => {
      const model = await loadDecoder(write(dirOf(), SEED), { device: 'cpu' });
      model.addAdapter('a', { config: 'double_seq_bn', reductionFactor: 4 }, { seed: 5 });
      for (const t of model.adapterParameters('a').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.sin(3 * i + t.size) * 0.1));
      model.trainAdapter('a');
      const inputs = { inputIds: [[0, 0, 5, 9, 13, 21], [34, 55, 89, 14, 23, 0]], attentionMask: [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]] };
      const labels = [[-100, -100, -100, 9, 13, 21], [-100, 55, 89, 14, 23, -100]];
      const run = (path: 'fused' | 'unfused') => {
        model.attentionPath = path;
        const out = model.forward(inputs, { labels });
        const logits = out.logits.toArray();
        const loss = out.lossValue!;
        model.backward(out);
        out.dispose();
        const g = new Map([...model.grads()].map(([k, t]) => [k, t.toArray()]));
        model.zeroGrad();
        return { logits, loss, g };
      };
      const a = run('unfused');
      const b = run('fused');
      const real = (x: Float32Array) => x.filter((_, i) => inputs.attentionMask[Math.floor(i / (6 * 97))][Math.floor(i / 97) % 6] === 1);
      expectClose(real(b.logits), real(a.logits), 1e-5, 1e-5);
      expect(b.loss).toBeCloseTo(a.loss, 5);
      for (const [k, v] of a.g) expectClose(b.g.get(k)!, v, 1e-4, 1e-6);
      model.dispose();
    });

  for (const [arch, write] of [['llama', writeTinyLlama], ['gpt2', writeTinyGpt2]] as const)
    for (const dtype of ['bfloat16', 'float16'] as const)
      test(`${arch} in ${dtype} on the CPU: logits, loss and adapter gradients near float32's`, async () => {
        const dir = write(dirOf(), SEED);
        const models = [await loadDecoder(dir, { device: 'cpu' }), await loadDecoder(dir, { device: 'cpu', dtype })];
        const inputs = { inputIds: [[0, 3, 14, 15, 92, 65], [35, 89, 79, 32, 38, 46]], attentionMask: [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]] };
        const labels = [[-100, -100, 14, 15, 92, 65], [-100, 89, 79, 32, 38, 46]];
        const res = models.map((m) => {
          // a smooth activation: with ReLU a unit whose input sits near 0 can switch off in half precision
          // and move one bias gradient by a whole token's share (seed 1164926604: 36%), which says nothing of the kernels
          m.addAdapter('a', { config: 'par_bn', reductionFactor: 4, nonLinearity: 'swish' }, { seed: 2 });
          for (const t of m.adapterParameters('a').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => Math.sin(i + t.size) * 0.1));
          m.trainAdapter('a');
          for (const path of ['unfused', 'fused'] as const) m.attentionPath = path; // the fused CPU op runs in the last pass
          const out = m.forward(inputs, { labels });
          const logits = out.logits.toArray();
          const loss = out.lossValue!;
          m.backward(out);
          out.dispose();
          return { logits, loss, grads: m.grads() };
        });
        const V = models[0].config.vocabSize;
        const real = (x: Float32Array) => x.filter((_, i) => inputs.attentionMask[Math.floor(i / (6 * V))][Math.floor(i / V) % 6] === 1);
        // Half precision keeps ~3 significant digits per op; after several layers single logits drift by a few hundredths,
        // so the check is on the whole: relative error of the real positions' logits, as for the gradients below.
        const [lo, hi] = [real(res[0].logits), real(res[1].logits)];
        const relLogits = Math.sqrt(lo.reduce((s2, v, i) => s2 + (v - hi[i]) ** 2, 0) / lo.reduce((s2, v) => s2 + v * v, 0));
        expect(relLogits).toBeLessThan(dtype === 'bfloat16' ? 0.03 : 0.005); // measured ~0.007 and ~0.001
        expect(hi.every(Number.isFinite)).toBe(true);
        expect(Math.abs(res[1].loss - res[0].loss)).toBeLessThan(2e-2 * res[0].loss);
        for (const [k, g] of res[0].grads) {
          const a = g.toArray();
          const b = res[1].grads.get(k)!.toArray();
          const norm = Math.sqrt(a.reduce((s2, v) => s2 + v * v, 0));
          expect(norm).toBeGreaterThan(0);
          const diff = Math.sqrt(a.reduce((s2, v, i) => s2 + (v - b[i]) ** 2, 0));
          // typically 0.01–0.04; a ReLU unit of the adapter whose input sits near 0 can flip sign in half
          // precision and move one small gradient by ~10% (seed 1164926604: 0.109); a broken gradient is ~1
          if (process.env.FA_TEST_SEED) console.log(dtype, k, (diff / norm).toFixed(4));
          expect({ k, rel: diff / norm < 0.25 }).toEqual({ k, rel: true });
        }
        for (const m of models) m.dispose();
      });
});
