// Compositions and AdapterFusion through the public API on the tiny BERT, against facts that do not
// need AdapterHub (the parity suite in test/reference/composition.test.ts covers its numbers): a
// Parallel channel or a BatchSplit slice equals its adapter run alone on those rows; Stack(a) and
// Average(a) equal a; fusion gradients equal central differences; training a fusion moves only it;
// fusion files round-trip and refuse what they cannot load; the string form; passes off the JS thread;
// and the command line (train --fuse, predict --fusion).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  AdamW, Average, Backbone, BatchSplit, Fuse, loadBackbone, loadDecoder, parseComposition, Stack, Tensor, tensor,
} from '../lib';
import { native } from '../lib/backend';
import { writeTinyLlama } from './decoderFixture';

const SEED = process.env.FA_TEST_SEED ? Number(process.env.FA_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
const MODEL = path.join(__dirname, 'fixtures', 'tiny-bert');
const CLI = path.join(__dirname, '..', 'dist', 'lib', 'cli.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fa-compose-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const inputs = { inputIds: [[2, 7, 11, 5, 3, 9], [2, 9, 4, 3, 0, 0], [2, 5, 5, 8, 3, 0]], attentionMask: [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]] };
const rowsOf = (inp: typeof inputs, rows: number[]) => ({ inputIds: rows.map((r) => inp.inputIds[r]), attentionMask: rows.map((r) => inp.attentionMask[r]) });
const hidden = (m: Backbone, inp: { inputIds: number[][]; attentionMask: number[][] }) => {
  const r = m.forward(inp);
  const v = Array.from(r.lastHiddenState.toArray());
  r.dispose();
  return v;
};
function close(a: number[], b: number[], tol = 2e-5): void {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  expect(worst).toBeLessThan(tol);
}

async function modelWithAdapters(): Promise<Backbone> {
  const m = await loadBackbone(MODEL, { device: 'cpu' });
  let k = 0;
  for (const [name, cfg] of [['a', 'seq_bn'], ['b', { config: 'seq_bn', reductionFactor: 4, nonLinearity: 'gelu' }], ['c', 'seq_bn'], ['d', 'double_seq_bn']] as const) {
    m.addAdapter(name, cfg, { seed: SEED % 1000 + k });
    for (const t of m.adapterParameters(name).values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => 0.2 * Math.sin(i * (k + 1) + t.size + SEED % 101)));
    k++;
  }
  return m;
}

describe(`compositions (seed ${SEED})`, () => {
  test('the string form: blocks, keywords, nesting rules and errors', () => {
    expect(String(parseComposition('Stack(lang, Fuse(a, b))'))).toBe('Stack(lang, Fuse(a, b))');
    expect(String(parseComposition(' BatchSplit( a ,b, batch_sizes=[2, 3]) '))).toBe('BatchSplit(a, b, batch_sizes=[2, 3])');
    expect(parseComposition('Average(a, b, weights=[1, 3])')).toMatchObject({ weights: [0.25, 0.75] });
    expect(String(parseComposition('a,b'))).toBe('Stack(a, b)');
    expect(parseComposition('a')).toBe('a');
    expect(parseComposition('Fuse(a, b, name=ab)').name).toBe('ab');
    expect(() => parseComposition('Mix(a, b)')).toThrow(/unknown block 'Mix'/);
    expect(() => parseComposition('Fuse(a, Parallel(b, c))')).toThrow(/cannot nest Parallel\(b, c\) in Fuse/);
    expect(() => parseComposition('Stack(a, Parallel(b, Stack(c, Fuse(d, e))))')).toThrow(/too deep/);
    expect(() => parseComposition('BatchSplit(a, b)')).toThrow(/BatchSplit needs batch_sizes/);
    expect(() => parseComposition('Stack(a, b')).toThrow(/expected ',' or '\)'/);
    expect(() => parseComposition('Average(a, b, weights=[1])')).toThrow(/one finite number per child/);
    expect(() => Stack()).toThrow(/at least one adapter/);
  });

  test('Stack(a) and Average(a) are a; a Parallel channel and a BatchSplit slice are their adapter alone', async () => {
    const m = await modelWithAdapters();
    m.setActiveAdapter('a');
    const aAll = hidden(m, inputs);
    m.setActiveAdapter('b');
    const bAll = hidden(m, inputs);
    m.setActiveAdapters(Stack('a'));
    expect(m.active).toBe('a'); // a one-adapter Stack is that adapter
    close(hidden(m, inputs), aAll);
    m.setActiveAdapters(Average('a'));
    close(hidden(m, inputs), aAll);
    m.setActiveAdapters('Parallel(a, b)');
    const par = hidden(m, inputs);
    expect(par.length).toBe(2 * aAll.length);
    close(par.slice(0, aAll.length), aAll);
    close(par.slice(aAll.length), bAll);
    m.setActiveAdapters(BatchSplit('a', 'b', { batchSizes: [1, 2] }));
    const split = hidden(m, inputs);
    const per = aAll.length / 3;
    m.setActiveAdapter('a');
    close(split.slice(0, per), hidden(m, rowsOf(inputs, [0])));
    m.setActiveAdapter('b');
    close(split.slice(per), hidden(m, rowsOf(inputs, [1, 2])));
    m.setActiveAdapters(BatchSplit('a', 'b', { batchSizes: [2, 2] }));
    expect(() => m.forward(inputs)).toThrow(/BatchSplit: the batch has 3 rows, batch_sizes sum to 4/);
    m.setActiveAdapters('Parallel(a, b)');
    expect(() => m.forward({ ...inputs, }, { labels: [0, 1, 0] })).toThrow(/Parallel composition .* no labels/);
    expect(() => m.setActiveAdapters('Stack(a, zz)')).toThrow(/no adapter named 'zz'/);
    expect(() => m.setActiveAdapters('Fuse(a, b)')).toThrow(/no fusion named 'a,b'/);
    m.dispose();
  });

  test('a fusion: gradients equal central differences; training it moves only the fusion and the head', async () => {
    const m = await modelWithAdapters();
    expect(m.addFusion(['a', 'b', 'c'])).toBe('a,b,c');
    expect(() => m.addFusion(['a', 'd'])).toThrow(/must agree on mh_adapter/);
    const fp = m.fusionParameters('a,b,c');
    expect([...fp.keys()].every((k) => /^bert\.encoder\.layer\.\d\.output\.adapter_fusion_layer\.a,b,c\.(query|key|value)\./.test(k))).toBe(true);
    for (const [k, t] of fp) if (!k.endsWith('value.weight')) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => 0.05 * Math.cos(i + t.size)));
    m.trainFusion(Fuse('a', 'b', 'c'));
    const H = m.config.hiddenSize;
    const R = Float32Array.from({ length: 3 * 6 * H }, (_, i) => Math.sin(i * 0.37));
    const loss = () => hidden(m, inputs).reduce((s, v, i) => s + v * R[i], 0);
    const res = m.forward(inputs);
    m.backward(res, tensor(R, [3, 6, H]));
    res.dispose();
    const grads = m.grads();
    expect([...grads.keys()].sort()).toEqual([...fp.keys()].sort()); // adapters frozen
    for (const key of [...fp.keys()].filter((k) => !k.endsWith('key.bias')).slice(0, 6)) {
      const t = fp.get(key)!;
      const base = t.toArray();
      const g = grads.get(key)!.toArray();
      for (const j of [0, Math.floor(t.size / 2) + 1]) {
        const eps = 1e-2;
        const at = (d: number) => { const v = Float32Array.from(base); v[j] += d; t.copyFrom(v); return loss(); };
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        t.copyFrom(base);
        expect(Math.abs(numeric - g[j])).toBeLessThan(2e-3 * Math.max(1, Math.abs(numeric)));
      }
    }
    // a few AdamW steps on the fusion: its tensors move, the adapters do not
    m.zeroGrad();
    m.addClassificationHead('task', { numLabels: 2 });
    m.setActiveHead('task');
    m.trainFusion('Fuse(a, b, c)');
    const before = new Map([...m.adapterParameters('a')].map(([k, t]) => [k, Array.from(t.toArray())]));
    const fBefore = Array.from(fp.values().next().value!.toArray());
    const opt = new AdamW(m.namedParameters(), { lr: 1e-2 });
    for (let s = 0; s < 2; s++) {
      const r = m.forward(inputs, { labels: [0, 1, 0], training: true });
      m.backward(r);
      r.dispose();
      expect(m.fusionRegularization()).toBeGreaterThanOrEqual(0);
      opt.step(m.grads());
      m.zeroGrad();
    }
    for (const [k, t] of m.adapterParameters('a')) expect(Array.from(t.toArray())).toEqual(before.get(k));
    expect(Array.from(fp.values().next().value!.toArray())).not.toEqual(fBefore);
    m.dispose();
  });

  test('fusion files round-trip, with a head; what cannot load is refused and adds nothing', async () => {
    const m = await modelWithAdapters();
    m.addFusion(['a', 'b']);
    for (const t of m.fusionParameters('a,b').values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => 0.03 * Math.sin(i + t.size)));
    m.addClassificationHead('topic', { numLabels: 2 });
    m.setActiveAdapters('Fuse(a, b)');
    const want = hidden(m, inputs);
    const dir = path.join(work, 'fusion');
    m.saveFusion(dir, 'a,b', { head: 'topic', labels: ['x', 'y'] });
    expect(fs.readdirSync(dir).sort()).toEqual(['adapter_fusion_config.json', 'head_config.json', 'model_adapter_fusion.safetensors', 'model_head.safetensors']);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_fusion_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ name: 'a,b', adapter_names: ['a', 'b'], config: { query: true, key: true, value: true, regularization: true } });
    m.deleteFusion('a,b');
    expect(m.loadFusion(dir)).toBe('a,b');
    m.setActiveAdapters('Fuse(a, b)');
    expect(hidden(m, inputs)).toEqual(want);
    expect(() => m.loadFusion(dir)).toThrow(/a fusion named 'a,b' already exists/);
    m.deleteFusion('a,b');
    const fresh = await loadBackbone(MODEL, { device: 'cpu' });
    fresh.addAdapter('a', 'seq_bn');
    expect(() => fresh.loadFusion(dir)).toThrow(/needs adapter\(s\) b; load them first/);
    fresh.dispose();
    const broken = path.join(work, 'broken');
    fs.mkdirSync(broken);
    fs.copyFileSync(path.join(dir, 'adapter_fusion_config.json'), path.join(broken, 'adapter_fusion_config.json'));
    fs.writeFileSync(path.join(broken, 'pytorch_model_adapter_fusion.bin'), 'pickle');
    expect(() => m.loadFusion(broken)).toThrow(/only pytorch_model_adapter_fusion\.bin \(a pickle/);
    fs.copyFileSync(path.join(dir, 'model_adapter_fusion.safetensors'), path.join(broken, 'model_adapter_fusion.safetensors'));
    fs.writeFileSync(path.join(broken, 'adapter_fusion_config.json'), JSON.stringify({ ...cfg, config: { ...cfg.config, value: false } }));
    expect(() => m.loadFusion(broken)).toThrow(/unexpected tensor/);
    expect(m.fusionNames()).toEqual([]);
    m.dispose();
  });

  test('forwardAsync / backwardAsync under a composition: the synchronous values, the pass all queued', async () => {
    const m = await modelWithAdapters();
    m.addFusion(['a', 'b', 'c']);
    m.trainFusion(Stack('a', Fuse('a', 'b', 'c')));
    const H = m.config.hiddenSize;
    const R = tensor(Float32Array.from({ length: 3 * 6 * H }, (_, i) => Math.cos(i * 0.21)), [3, 6, H]);
    const s = m.forward(inputs);
    const hs = Array.from(s.lastHiddenState.toArray());
    m.backward(s, R);
    const gs = [...m.grads()].map(([k, t]) => [k, Array.from(t.toArray())]);
    m.zeroGrad();
    const before = native().deferredStats();
    const a = await m.forwardAsync(inputs);
    expect(Array.from(a.lastHiddenState.toArray())).toEqual(hs);
    await m.backwardAsync(a, R);
    const after = native().deferredStats();
    expect(after.forced - before.forced).toBe(0);
    expect([...m.grads()].map(([k, t]) => [k, Array.from(t.toArray())])).toEqual(gs);
    [s, a].forEach((r) => r.dispose());
    (R as Tensor).dispose();
    m.dispose();
  });

  test('command line: train --fuse saves the fusion and its head; predict --fusion runs them', () => {
    const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, FUSED_ADAPTERS_DEVICE: 'cpu' } });
    const data = path.join(work, 'train.jsonl');
    fs.writeFileSync(data, Array.from({ length: 16 }, (_, i) => JSON.stringify({ text: i % 2 ? 'refund my broken order' : 'thanks all good', label: i % 2 ? 'refund' : 'ok' })).join('\n'));
    const dirs = ['a', 'b'].map((n) => path.join(work, `cli-${n}`));
    for (const [i, d] of dirs.entries()) {
      const t = cli(['train', '--model', MODEL, '--train', data, '--name', ['a', 'b'][i], '--epochs', '1', '--out', d]);
      expect(t.status).toBe(0);
    }
    const out = path.join(work, 'cli-fusion');
    const f = cli(['train', '--model', MODEL, '--train', data, '--fuse', 'Fuse(a, b)', '--load-adapter', dirs[0], '--load-adapter', dirs[1],
      '--name', 'mix', '--epochs', '2', '--lr', '0.01', '--out', out]);
    expect(f.stderr).toBe('');
    expect(f.status).toBe(0);
    expect(f.stdout).toMatch(/saved fusion 'a,b' and head 'mix'/);
    expect(fs.existsSync(path.join(out, 'model_adapter_fusion.safetensors'))).toBe(true);
    const p = cli(['predict', '--model', MODEL, '--adapter', dirs[0], '--adapter', dirs[1], '--fusion', out, 'refund my broken order']);
    expect(p.stderr).toBe('');
    const r = JSON.parse(p.stdout.trim());
    expect(r).toMatchObject({ setup: 'Fuse(a, b)', text: 'refund my broken order' });
    expect(['refund', 'ok']).toContain(r.label);
    const bad = cli(['train', '--model', MODEL, '--train', data, '--fuse', 'Stack(a, b)', '--load-adapter', dirs[0], '--out', path.join(work, 'x')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/exactly one Fuse/);
  });
});

describe(`compositions on a decoder (seed ${SEED})`, () => {
  const llamaDir = () => writeTinyLlama(path.join(work, `llama-${Math.random().toString(36).slice(2)}`), SEED);
  async function llama() {
    const m = await loadDecoder(llamaDir(), { device: 'cpu' });
    let k = 0;
    for (const [name, cfg] of [['a', 'seq_bn'], ['b', { config: 'seq_bn', reductionFactor: 4, nonLinearity: 'gelu' }], ['c', 'seq_bn']] as const) {
      m.addAdapter(name, cfg, { seed: k });
      for (const t of m.adapterParameters(name).values()) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => 0.2 * Math.sin(i * (k + 2) + t.size)));
      k++;
    }
    return m;
  }
  const ids = [[3, 17, 5, 9, 22], [8, 1, 40, 2, 7]];
  const logits = (m: Awaited<ReturnType<typeof llama>>, inputIds: number[][]) => {
    const o = m.forward({ inputIds });
    const v = Array.from(o.logits.toArray());
    o.dispose();
    return v;
  };

  test('Average(a) is a; a BatchSplit slice and a Parallel channel are their adapter alone; generate refuses Parallel', async () => {
    const m = await llama();
    m.setActiveAdapter('a');
    const a = logits(m, ids);
    m.setActiveAdapters(Average('a'));
    close(logits(m, ids), a);
    m.setActiveAdapters('BatchSplit(a, b, batch_sizes=[1, 1])');
    const split = logits(m, ids);
    m.setActiveAdapter('b');
    close(split.slice(a.length / 2), logits(m, [ids[1]]));
    close(split.slice(0, a.length / 2), a.slice(0, a.length / 2));
    m.setActiveAdapters('Parallel(a, b)');
    const par = logits(m, ids);
    close(par.slice(0, a.length), a);
    m.setActiveAdapter('b');
    close(par.slice(a.length), logits(m, ids));
    m.setActiveAdapters('Parallel(a, b)');
    expect(() => m.forward({ inputIds: ids }, { labels: ids })).toThrow(/Parallel composition .* no labels/);
    await expect(m.generate([ids[0]], { maxNewTokens: 2 })).rejects.toThrow(/generate: a Parallel composition/);
    m.dispose();
  });

  test('Fuse on a decoder: gradients equal central differences; generation with the KV cache equals recomputation', async () => {
    const m = await llama();
    m.addFusion(['a', 'b', 'c'], 'dynamic');
    for (const [k, t] of m.fusionParameters('a,b,c')) if (!k.endsWith('value.weight')) t.copyFrom(Float32Array.from({ length: t.size }, (_, i) => 0.05 * Math.cos(i + t.size)));
    expect([...m.fusionParameters('a,b,c').keys()][0]).toMatch(/^model\.layers\.0\.(attention|output)_adapters\.adapter_fusion_layer\.a,b,c\./);
    m.trainFusion(Fuse('a', 'b', 'c'));
    const labels = ids.map((r) => r.map((t, i) => (i ? t : -100)));
    const out = m.forward({ inputIds: ids }, { labels });
    m.backward(out);
    out.dispose();
    const grads = m.grads();
    const lossOf = () => { const o = m.forward({ inputIds: ids }, { labels }); const l = o.lossValue!; o.dispose(); return l; };
    for (const [key, t] of [...m.fusionParameters('a,b,c')].filter(([k]) => !k.endsWith('key.bias')).slice(0, 4)) {
      const base = t.toArray();
      const g = grads.get(key)!.toArray();
      const j = 7;
      const at = (d: number) => { const v = Float32Array.from(base); v[j] += d; t.copyFrom(v); return lossOf(); };
      const numeric = (at(1e-2) - at(-1e-2)) / 2e-2;
      t.copyFrom(base);
      expect(Math.abs(numeric - g[j])).toBeLessThan(2e-3 * Math.max(1, Math.abs(numeric)));
    }
    m.zeroGrad();
    m.setActiveAdapters('Fuse(a, b, c)');
    const gen = (await m.generate([ids[0]], { maxNewTokens: 6 })) as number[][];
    const full = [...ids[0], ...gen[0]];
    const l = logits(m, [full]);
    const V = m.config.vocabSize;
    for (let t = ids[0].length - 1; t < full.length - 1; t++) {
      const row = l.slice(t * V, (t + 1) * V);
      expect(row.indexOf(Math.max(...row))).toBe(full[t + 1]);
    }
    m.dispose();
  });
});
